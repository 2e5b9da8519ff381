"""Reward throughput: the reference's way against the Serve ensemble, in one run, cold caches.

    python bench/reward_throughput.py [--items 512] [--out runs/bench/reward_throughput.json]

Items are what training produces: groups of 5 responses sampled from SmolLM2-135M-Instruct on
the bundled questions (duplicates and all), scored with the paper preset so that every
configuration does the same work. Measured:

(a) reference: the reference's `compute_score` loop — one blocking chat request per item to a
    judge served as the reference serves it (a vLLM OpenAI server, default settings), and one
    [answer, reference] embedding pair at a time;
(c) the Serve ensemble against that same server (gain from the ensemble alone);
(b) the Serve ensemble with its own judge serving settings (prefix caching), cold verdict cache;
(b-warm) (b) again on the same items (verdict and reference-embedding caches warm).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample_items(n_items: int, group: int, cache: Path) -> list[dict]:
    """Returns n_items reward items: `group` sampled responses per bundled question (cached on disk)."""
    if cache.is_file():
        items = [json.loads(line) for line in cache.read_text().splitlines()]
        if len(items) >= n_items:
            return items[:n_items]
    import ray

    from medix_ray.config import RolloutConfig
    from medix_ray.data.readers import read_samples, take_samples
    from medix_ray.models import resolve_model
    from medix_ray.rollout.vllm_engine import VLLMGenerator

    ds, report = read_samples("bundled", split="train", text_only=True)
    samples = take_samples(ds, report, limit=(n_items + group - 1) // group)
    ray.shutdown()
    gen = VLLMGenerator(
        resolve_model("smollm2-135m-instruct"),
        RolloutConfig(n=group, max_tokens=96, max_model_len=1024, gpu_memory_utilization=0.3),
    )
    items = []
    for s, g in zip(samples, gen.generate(samples, seed=0), strict=True):
        for k, text in enumerate(g.responses):
            items.append({"id": f"{s.id}_{k}", "question": s.problem, "response": text, "reference": s.solution})
    gen.llm.llm_engine.engine_core.shutdown()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("".join(json.dumps(i) + "\n" for i in items))
    return items[:n_items]


def reference_way(items: list[dict], base_url: str, model: str) -> float:
    """Scores items as the reference does; returns seconds."""
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer

    from medix_ray.models import resolve_model
    from medix_ray.rewards import rules
    from medix_ray.rewards.judge import judge_prompt, parse_verdict

    client = OpenAI(base_url=base_url, api_key="EMPTY", timeout=180)
    embedder = SentenceTransformer(resolve_model("all-minilm-l6-v2"), device="cpu")
    start = time.monotonic()
    for it in items:
        response = rules.squeeze_whitespace(it["response"])
        _, gt = rules.split_reference(it["reference"])
        match = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)  # the reference's own extraction
        answer = rules.clean_answer(match.group(1) if match else response)
        if rules.paper_invalid_answer(answer) or answer == gt:
            continue
        reply = (
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": judge_prompt("paper", answer, gt)}],
                temperature=0.0,
                top_p=1.0,
                max_tokens=4,
            )
            .choices[0]
            .message.content
            or ""
        )
        parse_verdict("paper", reply)
        a, b = embedder.encode([answer, gt], normalize_embeddings=True)
        float(a @ b)
    return time.monotonic() - start


def ensemble(items: list[dict], cfg_overrides: list[str], port: int, repeat: int = 1) -> list[float]:
    """Deploys the Serve app, scores the items `repeat` times through HTTP; returns seconds per pass.

    Serve keeps the HTTP port of its first start for the life of the cluster: pass the same port each time.
    """
    import asyncio

    import httpx
    from ray import serve

    from deployments.reward_app import build_reward_app
    from medix_ray.config import load_config

    cfg = load_config(
        ROOT / "configs/serve/rewards_cpu.yaml", ["reward.preset=paper", f"serve.port={port}", *cfg_overrides]
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_reward_app(cfg), name="bench-rewards", route_prefix="/")
    chunks = [items[k : k + 64] for k in range(0, len(items), 64)]

    async def one_pass() -> None:
        async with httpx.AsyncClient(timeout=900) as client:
            responses = await asyncio.gather(
                *(client.post(f"http://127.0.0.1:{port}/v1/rewards", json={"items": c}) for c in chunks)
            )
        for r in responses:
            r.raise_for_status()
        got = sum(len(r.json()["results"]) for r in responses)
        assert got == len(items), f"lost items: {got} of {len(items)}"

    times = []
    for _ in range(repeat):
        start = time.monotonic()
        asyncio.run(one_pass())
        times.append(time.monotonic() - start)
    serve.delete("bench-rewards")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--group", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench/reward_throughput.json")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    items = sample_items(args.items, args.group, ROOT / "runs/bench/reward_items.jsonl")
    n = len(items)
    print(f"{n} items, {len({i['response'] for i in items})} distinct responses", flush=True)

    import ray

    from medix_ray.rewards.judge_server import LocalJudgeServer

    results: dict[str, float] = {}
    with LocalJudgeServer("smollm2-135m-instruct", profile="reference") as url:
        results["a_reference_s"] = reference_way(items, url, "smollm2-135m-instruct")
        print(f"(a) reference way: {n / results['a_reference_s']:.1f} items/s", flush=True)
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        (results["c_ensemble_same_server_s"],) = ensemble(items, [f"reward.judge.base_url={url}"], 8771)
        print(f"(c) ensemble, same server: {n / results['c_ensemble_same_server_s']:.1f} items/s", flush=True)
    results["b_ensemble_s"], results["b_warm_s"] = ensemble(items, ["serve.judge_profile=tuned"], 8771, repeat=2)
    print(f"(b) ensemble, tuned judge: {n / results['b_ensemble_s']:.1f} items/s; warm {n / results['b_warm_s']:.1f}")
    ray.shutdown()
    report = {
        "items": n,
        **{k.removesuffix("_s") + "_items_per_s": n / v for k, v in results.items()},
        "ratio_b_over_a": results["a_reference_s"] / results["b_ensemble_s"],
        "ratio_c_over_a": results["a_reference_s"] / results["c_ensemble_same_server_s"],
        "ratio_warm_over_a": results["a_reference_s"] / results["b_warm_s"],
        "seconds": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
