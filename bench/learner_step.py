"""Learner step throughput: the Ray Train + DeepSpeed learner group against a plain PyTorch loop, one run.

    python bench/learner_step.py [--rows 8] [--response-tokens 96] [--steps 3]

Same batch, same work: SmolLM2-135M-Instruct, `rows` bundled questions each with a response of
`response-tokens` tokens, micro-batch 2, one optimizer step per update (AdamW, fp32 on CPU).
(a) baseline: one process, plain PyTorch (`TorchEngine`), all cores;
(b) the learner group: 2 Ray Train workers, DeepSpeed ZeRO-2 over gloo, one core each.
Reported: processed tokens (prompt + response) per second of an update, after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_batch(rows: int, response_tokens: int):
    import ray

    from medix_ray.data.readers import read_samples, take_samples
    from medix_ray.learner.batch import build_sample_batch
    from medix_ray.models import resolve_model
    from medix_ray.rollout.vllm_engine import load_prompt_renderer

    path = resolve_model("smollm2-135m-instruct")
    renderer = load_prompt_renderer(path)
    ds, report = read_samples("bundled", split="train", text_only=True)
    samples = take_samples(ds, report, limit=rows)
    ray.shutdown()
    g = torch.Generator().manual_seed(0)
    responses = [torch.randint(100, 40000, (response_tokens,), generator=g).tolist() for _ in samples]
    advantages = torch.linspace(-1, 1, rows).tolist()
    return path, build_sample_batch(samples, responses, advantages, renderer)


def plain_loop(path, batch, steps, cfg, algo) -> list[float]:
    from transformers import AutoModelForCausalLM

    from medix_ray.learner.logprobs import batch_logprobs
    from medix_ray.learner.update import TorchEngine, minibatch_update

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    batch.old_logp = batch_logprobs(model.eval(), batch, cfg.micro_batch_size)
    model.train()
    engine = TorchEngine(model, lr=cfg.lr)
    times = []
    for _ in range(steps + 1):
        start = time.monotonic()
        minibatch_update(engine, batch, algo, micro_batch_size=cfg.micro_batch_size)
        times.append(time.monotonic() - start)
    return times[1:]


def learner_group(path, batch, steps, cfg, algo, storage) -> list[float]:
    import ray

    from medix_ray.learner.group import LearnerGroup

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    group = LearnerGroup(path, cfg, algo, storage_path=storage, name=f"bench-{int(time.time())}")
    group.start()
    try:
        batch.old_logp = group.compute_logprobs(batch)
        times = []
        for _ in range(steps + 1):
            start = time.monotonic()
            group.update(batch)
            times.append(time.monotonic() - start)
    finally:
        group.shutdown()
        ray.shutdown()
    return times[1:]


def main() -> None:
    from medix_ray.config import AlgorithmConfig, LearnerConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--response-tokens", type=int, default=96)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench/learner_step.json")
    args = parser.parse_args()
    path, batch = make_batch(args.rows, args.response_tokens)
    tokens = int(batch.attention_mask.sum())
    cfg = LearnerConfig(
        num_workers=2, zero_stage=2, lr=1e-6, micro_batch_size=2, mini_batches_per_step=1, cpus_per_worker=1
    )
    algo = AlgorithmConfig()
    plain = plain_loop(path, batch, args.steps, cfg, algo)
    print(f"(a) plain PyTorch, 1 process: {tokens / (sum(plain) / len(plain)):.0f} tokens/s  steps {plain}", flush=True)
    group = learner_group(path, batch, args.steps, cfg, algo, str(ROOT / "runs/bench/learner"))
    print(f"(b) learner group, 2 workers: {tokens / (sum(group) / len(group)):.0f} tokens/s  steps {group}")
    report = {
        "rows": batch.size,
        "tokens_per_step": tokens,
        "response_tokens_per_step": batch.response_tokens,
        "plain_tokens_per_s": tokens / (sum(plain) / len(plain)),
        "group_tokens_per_s": tokens / (sum(group) / len(group)),
        "ratio_group_over_plain": (sum(plain) / len(plain)) / (sum(group) / len(group)),
        "plain_step_s": plain,
        "group_step_s": group,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
