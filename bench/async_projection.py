"""Projected step time of synchronous and asynchronous RL for a recipe's shape, from per-phase costs.

    python bench/async_projection.py --timeline runs/tiny_cpu/timeline.jsonl          # costs measured here
    python bench/async_projection.py --gen 420 --reward 60 --update 380 --sync 25      # typed in (GPU figures)
    python bench/async_projection.py --timeline RUN/timeline.jsonl --recipe configs/paper/dapo_8b.yaml \\
        --staleness 0,1,2,4 --steps 200
    python bench/async_projection.py --sweep 0.25,0.5,1,2 --update 400 --sync 10   # speed-up against (G + R) / U

A step has four phases: generation (G: every sampling round of the step's prompts on the fleet),
reward (R: the composite reward of its completions), update (U: the learner's log-prob passes and
its mini-batch updates) and sync (S: the weight push and load). The simulator plays `--steps`
steps of both modes on one fleet and one learner group:

- sync (today's loop): generate, score, update, then push every `sync_interval` updates, one after
  the other: a step takes G + R + U (+ S on a sync step).
- async: the fleet generates batch j as soon as it has finished batch j - 1 and holds a policy at
  most `max_staleness` versions behind the learner that will train on it (batch j is trained by
  update j, on top of version j - 1, so it needs version >= j - 1 - max_staleness); the learner
  takes batch j once it is scored and update j - 1 (and its push) are done. A push stops the
  world for the load itself: the learner sends and the fleet pauses generation for S, then
  resumes the batch it was generating. In steady state a step takes max(G + R, U) + S; the first
  batch fills the pipeline (the learner waits G + R for it). max_staleness = 0 is the sync loop.

Costs are seconds per step at the recipe's shape. Typed-in costs are taken as they are. Costs from
a run's timeline.jsonl (medix_ray/trainer/timeline.py) are the median over its training steps
(the first step, a warm-up, is left out when there are more) of: the union of the rollout lanes'
`generate` spans (G), the reward lane's `score` spans (R), the learner's `logprobs`,
`ref_logprobs` and `update` spans (U), and the sync lane's `push` and `resync` spans (S); then
G, R and U are scaled by the ratio of completions per step (recipe prompts x n over the run's, read
from the run folder's config.yaml), S is not (the weights do not grow with the batch).

Assumptions, named:
1. G + R is on the critical path as one block: the projection does not count the overlap of the
   reward with generation that scoring each group as it finishes would add (conservative for async).
2. G, R and U scale linearly with completions per step (vLLM batching makes G sublinear until the
   fleet saturates; at the 8B shape of 2,560 completions it is saturated).
3. The phase costs do not change between the modes: no contention between the fleet and the learner
   (they hold separate GPUs on a cluster; on one small CPU machine they share cores, so async
   gains less than projected there), and the update of a stale batch costs the same.
4. Validation and checkpoints are left out; they stop both modes alike.
5. Dynamic sampling's extra rounds are inside G (as measured); async would start them sooner.
6. A timeline's costs keep the model size of the run that wrote it: a tiny CPU run projects the
   recipe's shape, not its 8B model; type in GPU costs for that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class PhaseCosts:
    """Seconds per step of each phase."""

    gen: float
    reward: float
    update: float
    sync: float

    def __post_init__(self) -> None:
        for name in ("gen", "reward", "update", "sync"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"phase cost {name} must be a number >= 0 seconds, got {value!r}")

    def scaled(self, factor: float) -> PhaseCosts:
        """The costs at `factor` times the completions per step (the sync does not grow with the batch)."""
        return PhaseCosts(self.gen * factor, self.reward * factor, self.update * factor, self.sync)


@dataclass(frozen=True)
class Projection:
    mode: str  # "sync" or "async"
    max_staleness: int
    steps: int
    total_s: float
    steady_step_s: float  # the time per step once the pipeline is full (the last step's)
    fill_s: float  # total - steps x steady step: the pipeline fill (0 in sync mode)
    learner_busy: float  # the learner's share of the total (update + push)
    fleet_busy: float  # the fleet's share (generation + reward + the pauses of the pushes)


def sync_mode(costs: PhaseCosts, steps: int, sync_interval: int = 1) -> Projection:
    """Today's loop: every phase after the other."""
    _check(steps, sync_interval, 0)
    pushes = steps // sync_interval
    total = steps * (costs.gen + costs.reward + costs.update) + pushes * costs.sync
    step = costs.gen + costs.reward + costs.update + costs.sync / sync_interval
    learner = steps * costs.update + pushes * costs.sync
    fleet = steps * (costs.gen + costs.reward) + pushes * costs.sync
    return Projection("sync", 0, steps, total, step, 0.0, learner / total, fleet / total)


def async_mode(costs: PhaseCosts, steps: int, max_staleness: int, sync_interval: int = 1) -> Projection:
    """The pipelined loop, played event by event (see the module's description)."""
    _check(steps, sync_interval, max_staleness)
    if max_staleness < sync_interval - 1:
        raise ValueError(
            f"max_staleness {max_staleness} < sync_interval - 1 = {sync_interval - 1}: the fleet would wait"
            " for a version that is never pushed"
        )
    block = costs.gen + costs.reward
    pushes: list[tuple[float, float]] = []  # (start, end) of each push, in order
    version_at = {0: 0.0}  # the time the fleet starts serving each pushed version
    fleet_free = 0.0
    step_ends = [0.0]  # when the learner is done with each step (its update and push)
    for j in range(1, steps + 1):
        need = j - 1 - max_staleness  # the oldest version batch j may be generated with
        start = max(fleet_free, min(t for v, t in version_at.items() if v >= need))
        fleet_free = _run_through_pauses(start, block, pushes)
        update_end = max(fleet_free, step_ends[-1]) + costs.update
        if j % sync_interval == 0:
            pushes.append((update_end, update_end + costs.sync))
            version_at[j] = update_end + costs.sync
        step_ends.append(pushes[-1][1] if j % sync_interval == 0 else update_end)
    total = step_ends[-1]
    window = min(sync_interval, steps)  # the mean step over the last sync interval
    steady = (step_ends[-1] - step_ends[-1 - window]) / window
    fill = round(total - steps * steady, 9) + 0.0  # no -0.0 from float rounding
    learner = steps * costs.update + len(pushes) * costs.sync
    fleet = steps * block + len(pushes) * costs.sync
    return Projection("async", max_staleness, steps, total, steady, fill, learner / total, fleet / total)


def _run_through_pauses(start: float, work: float, pauses: list[tuple[float, float]]) -> float:
    """Returns when `work` seconds begun at `start` end, the fleet standing still during each pause."""
    t, left = start, work
    for a, b in pauses:
        if b <= t:
            continue
        if a >= t + left:
            break
        left -= max(a - t, 0.0)
        t = b
    return t + left


def _check(steps: int, sync_interval: int, max_staleness: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if sync_interval < 1:
        raise ValueError(f"sync_interval must be >= 1, got {sync_interval}")
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")


@dataclass(frozen=True)
class MeasuredCosts:
    costs: PhaseCosts
    steps: int  # the training steps the medians are taken over
    step_s: float  # the median measured step (first span start to last span end of the step)


def costs_from_timeline(path: str | Path) -> MeasuredCosts:
    """Returns the median per-step phase costs of a run's timeline (see the module's description)."""
    from medix_ray.trainer.timeline import busy_seconds, read_spans

    per_step = defaultdict(list)
    for span in read_spans(path):
        if span.step >= 1 and span.name not in ("validate", "save"):
            per_step[(span.session, span.step)].append(span)
    if not per_step:
        raise ValueError(f"{path}: no training step in the timeline")
    keys = sorted(per_step)[1:] if len(per_step) > 1 else sorted(per_step)
    rows = []
    for key in keys:
        spans = per_step[key]
        generate = [s for s in spans if s.role == "rollout" and s.name == "generate"]
        union = busy_seconds([_on_one_lane(s) for s in generate]).get("rollout", 0.0)
        reward = sum(s.seconds for s in spans if s.role == "reward")
        update = sum(s.seconds for s in spans if s.role == "learner")
        sync = sum(s.seconds for s in spans if s.role == "sync")
        step = max(s.end for s in spans) - min(s.start for s in spans)
        rows.append((union, reward, update, sync, step))
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    return MeasuredCosts(PhaseCosts(*med[:4]), len(rows), med[4])


def _on_one_lane(span):
    """The span moved onto one rollout lane (so that the replicas' concurrent spans count once)."""
    from dataclasses import replace

    return replace(span, lane="rollout")


def recipe_shape(config: str | Path) -> dict[str, int]:
    from medix_ray.config import load_config

    cfg = load_config(str(config))
    return {
        "prompts": cfg.trainer.prompts_per_step,
        "n": cfg.rollout.n,
        "mini_batches": cfg.learner.mini_batches_per_step,
        "sync_interval": cfg.trainer.sync_interval,
        "steps": cfg.trainer.steps,
    }


def table(costs: PhaseCosts, steps: int, sync_interval: int, staleness: list[int]) -> list[Projection]:
    """Sync mode, then async at each max_staleness."""
    return [sync_mode(costs, steps, sync_interval)] + [async_mode(costs, steps, k, sync_interval) for k in staleness]


def render(rows: list[Projection]) -> str:
    base = rows[0].total_s
    lines = [
        "| mode | max_staleness | step (steady) s | fill s | total s | speed-up | learner busy | fleet busy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in rows:
        lines.append(
            f"| {p.mode} | {p.max_staleness if p.mode == 'async' else '-'} | {p.steady_step_s:.1f} | {p.fill_s:.1f}"
            f" | {p.total_s:.0f} | {base / p.total_s:.2f}x | {p.learner_busy:.0%} | {p.fleet_busy:.0%} |"
        )
    return "\n".join(lines)


def sweep(ratios: list[float], update: float, sync: float, steps: int, sync_interval: int, max_staleness: int) -> str:
    """The table of sync and async steps for generation + reward at each ratio of the update's cost."""
    lines = ["| (G + R) / U | sync step s | async step s | speed-up |", "|---|---|---|---|"]
    for ratio in ratios:
        costs = PhaseCosts(ratio * update, 0.0, update, sync)
        a, b = sync_mode(costs, steps, sync_interval), async_mode(costs, steps, max_staleness, sync_interval)
        lines.append(f"| {ratio:g} | {a.steady_step_s:.1f} | {b.steady_step_s:.1f} | {a.total_s / b.total_s:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeline", help="a run's timeline.jsonl (its folder's config.yaml gives its shape)")
    for phase in ("gen", "reward", "update", "sync"):
        parser.add_argument(f"--{phase}", type=float, help=f"typed-in {phase} seconds per step at the recipe's shape")
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "paper" / "dapo_8b.yaml"))
    parser.add_argument("--staleness", default="0,1,2", help="max_staleness values for async mode")
    parser.add_argument("--steps", type=int, help="steps to play (default: the recipe's trainer.steps)")
    parser.add_argument(
        "--sweep", help="ratios (G + R) / U to tabulate, with --update and --sync (async at the largest --staleness)"
    )
    args = parser.parse_args(argv)

    shape = recipe_shape(args.recipe)
    steps = args.steps or shape["steps"]
    typed = [getattr(args, p) for p in ("gen", "reward", "update", "sync")]
    target = shape["prompts"] * shape["n"]
    staleness = [int(k) for k in args.staleness.split(",") if k.strip()]
    if args.sweep:
        if args.update is None or args.sync is None:
            parser.error("--sweep needs --update and --sync")
        ratios = [float(r) for r in args.sweep.split(",") if r.strip()]
        print(f"U {args.update:g} s, S {args.sync:g} s, {steps} steps, max_staleness {max(staleness)}")
        print(sweep(ratios, args.update, args.sync, steps, shape["sync_interval"], max(staleness)))
        return
    if args.timeline and any(v is not None for v in typed):
        parser.error("give --timeline or the four typed-in costs, not both")
    if args.timeline:
        measured = costs_from_timeline(args.timeline)
        run = recipe_shape(Path(args.timeline).parent / "config.yaml")
        completions = run["prompts"] * run["n"]
        costs = measured.costs.scaled(target / completions)
        own = sync_mode(measured.costs, 1)
        print(
            f"timeline {args.timeline}: {measured.steps} step(s) at {run['prompts']}x{run['n']} = {completions}"
            f" completions; median phases G {measured.costs.gen:.2f} R {measured.costs.reward:.2f}"
            f" U {measured.costs.update:.2f} S {measured.costs.sync:.2f} s; the sync model's step"
            f" {own.steady_step_s:.2f} s against {measured.step_s:.2f} s measured"
        )
        print(f"scaled x{target / completions:.1f} to the recipe's {target} completions (the sync cost kept)")
    elif all(v is not None for v in typed):
        costs = PhaseCosts(*typed)
    else:
        parser.error("give --timeline, or all of --gen --reward --update --sync")
    print(
        f"recipe {args.recipe}: {shape['prompts']} prompts x {shape['n']} = {target} completions per step,"
        f" {shape['mini_batches']} mini-batches, sync every {shape['sync_interval']} step(s), {steps} steps;"
        f" costs per step G {costs.gen:.1f} R {costs.reward:.1f} U {costs.update:.1f} S {costs.sync:.1f} s"
    )
    print(render(table(costs, steps, shape["sync_interval"], staleness)))


if __name__ == "__main__":
    main()
