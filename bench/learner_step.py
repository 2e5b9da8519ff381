"""Learner update throughput: the per-row layout against the shared-prefix + packed layout, same run.

    python bench/learner_step.py [--cases a,b,c] [--steps 2] [--out runs/bench/learner_step.json]

Cases, built from the bundled data (random response tokens, fixed seeds):
(a) SmolLM2-135M-Instruct, text: 4 prompts x 5 responses of 32-96 tokens;
(b) tiny-qwen2.5-vl: 4 image prompts x 5 responses of 32-96 tokens, images fitted to the paper recipes'
    data.min_pixels (262,144 px, 512 x 512: 324 image tokens each);
(c) SmolLM2-135M-Instruct: one 1,024-token prompt with 5 responses of 128 tokens.
Each side runs in its own process (its peak memory is its own): one update (forward, backward, AdamW
step; fp32 on CPU) as a warm-up, then `steps` timed ones. Per row: one group (5 rows) per micro-batch;
shared prefix: a token budget of the same 5 rows' padded size, so both hold the same tokens per
micro-batch at most. Tokens/s counts the per-row layout's tokens (prompt + response of every row) on
both sides, so equal work is compared. The JSON has a top-level `speedup` object keyed by case.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUP = 5
RECIPE_MIN_PIXELS = 262144  # configs/paper/*.yaml data.min_pixels
CASES = {
    "a": "text, 4 prompts x 5 responses of 32-96 tokens (SmolLM2-135M)",
    "b": "tiny-qwen2.5-vl, 4 image prompts (min_pixels 262,144) x 5 responses of 32-96 tokens",
    "c": "one 1,024-token prompt x 5 responses of 128 tokens (SmolLM2-135M)",
}


def _responses(lengths: list[int], seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(100, 40000, (n,), generator=g).tolist() for n in lengths]


def _lengths(rows: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(32, 97, (rows,), generator=g).tolist()


def _stop_ray() -> None:
    import ray

    ray.shutdown()  # the bundled data is read through Ray Data; the update itself runs without Ray


def make_case(case: str):
    """Returns (model, batch) of a case."""
    from medix_ray.data.images import PixelBounds
    from medix_ray.data.readers import read_samples, take_samples
    from medix_ray.learner.batch import build_batch, build_sample_batch
    from medix_ray.models import resolve_model
    from medix_ray.rollout.vllm_engine import load_prompt_renderer

    if case == "b":
        from transformers import AutoModelForImageTextToText

        path = resolve_model("tiny-qwen2.5-vl")
        renderer = load_prompt_renderer(path)
        # the tiny processor caps images at 224 x 224; the recipes' bounds apply here
        renderer.image_processor.min_pixels = RECIPE_MIN_PIXELS
        renderer.image_processor.max_pixels = 4 * RECIPE_MIN_PIXELS
        renderer.image_processor.size = {"shortest_edge": RECIPE_MIN_PIXELS, "longest_edge": 4 * RECIPE_MIN_PIXELS}
        ds, report = read_samples("bundled", split="train")
        samples = [s for s in take_samples(ds, report, limit=0) if len(s.images) == 1][:4]
        _stop_ray()
        rows = [s for s in samples for _ in range(GROUP)]
        batch = build_sample_batch(
            rows,
            _responses(_lengths(len(rows), 1), 2),
            torch.linspace(-1, 1, len(rows)),
            renderer,
            bounds=PixelBounds(RECIPE_MIN_PIXELS, 4 * RECIPE_MIN_PIXELS),
        )
        return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32), batch
    from transformers import AutoModelForCausalLM

    path = resolve_model("smollm2-135m-instruct")
    renderer = load_prompt_renderer(path)
    ds, report = read_samples("bundled", split="train", text_only=True)
    samples = take_samples(ds, report, limit=0)
    _stop_ray()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if case == "a":
        rows = [s for s in samples[:4] for _ in range(GROUP)]
        batch = build_sample_batch(
            rows, _responses(_lengths(len(rows), 1), 2), torch.linspace(-1, 1, len(rows)), renderer
        )
        return model, batch
    # (c) the bundled questions' token ids, concatenated to one 1,024-token prompt
    ids: list[int] = []
    for s in samples:
        ids += renderer(s.problem, add_special_tokens=False)["input_ids"]
    if len(ids) < 1024:
        raise RuntimeError(f"the bundled questions give {len(ids)} tokens, fewer than 1,024")
    batch = build_batch([ids[:1024]] * GROUP, _responses([128] * GROUP, 3), torch.linspace(-1, 1, GROUP), 0)
    return model, batch


def child(case: str, layout_name: str, steps: int) -> dict:
    from medix_ray.config import AlgorithmConfig
    from medix_ray.learner.logprobs import Layout
    from medix_ray.learner.update import TorchEngine, minibatch_update

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, batch = make_case(case)
    widest = int(batch.attention_mask.sum(dim=1).max())
    layout = Layout.per_row(GROUP) if layout_name == "per_row" else Layout.shared(GROUP * widest)
    engine = TorchEngine(model.train(), lr=1e-6)
    algo = AlgorithmConfig()
    times, stats = [], None
    for _ in range(steps + 1):
        start = time.monotonic()
        stats = minibatch_update(engine, batch, algo, layout=layout, on_policy=True)
        times.append(time.monotonic() - start)
    return {
        "step_s": times[1:],
        "tokens_per_row_layout": int(batch.attention_mask.sum()),
        "padded_tokens_per_row_layout": int(batch.attention_mask.numel()),
        "prompt_tokens_mean": float(batch.prompt_lens.float().mean()),
        "response_tokens": batch.response_tokens,
        "rows": batch.size,
        "micro_batches": stats.micro_batches,
        "attention": stats.attention,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a,b,c")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench/learner_step.json")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.steps)))
        return
    report: dict = {"cases": {}, "speedup": {}, "memory_ratio": {}}
    for case in args.cases.split(","):
        result = {"what": CASES[case]}
        for layout in ("per_row", "shared"):
            cmd = [sys.executable, __file__, "--child", case, layout, "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            r["tokens_per_s"] = r["tokens_per_row_layout"] / (sum(r["step_s"]) / len(r["step_s"]))
            result[layout] = r
            print(
                f"({case}) {layout:8s} {r['tokens_per_s']:8.0f} tokens/s  peak {r['peak_rss_gib']:.2f} GiB  "
                f"steps {[round(t, 2) for t in r['step_s']]}  {r['attention']}",
                flush=True,
            )
        report["cases"][case] = result
        report["speedup"][case] = result["shared"]["tokens_per_s"] / result["per_row"]["tokens_per_s"]
        report["memory_ratio"][case] = result["shared"]["peak_rss_gib"] / result["per_row"]["peak_rss_gib"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"speedup": report["speedup"], "memory_ratio": report["memory_ratio"]}, indent=2))


if __name__ == "__main__":
    main()
