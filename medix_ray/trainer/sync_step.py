"""Sync mode's step: prompts -> scored groups, with dynamic sampling's extra rounds, then trimmed to the ranks.

    batch = collect_sync(rollouts, stream, cfg, step=4)   # StepBatch: kept, sampled, rounds, times

Round 1 asks for `trainer.prompts_per_step` prompts; while dynamic sampling drops groups, each further
round (up to `algorithm.max_sampling_rounds`) asks for the missing ones times `trainer.oversample`.
The kept groups are trimmed so that their rows split evenly over the mini-batches and learner ranks;
the groups left out are marked FILTERED.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from medix_ray.config import MedixConfig
from medix_ray.trajectory import GroupStatus, ScoredGroup


@dataclass
class StepBatch:
    """What a step trains on, and what it sampled to get there (both modes)."""

    kept: list[ScoredGroup]  # status KEPT
    sampled: list[ScoredGroup]  # every group of the step, kept or not
    rounds: int = 1  # sampling rounds (sync mode)
    rollout_s: float = 0.0
    reward_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)  # mode-specific metrics (async: staleness, wait)


def trim_groups(groups: int, n: int, unit: int) -> int:
    """Returns the most of `groups` groups (n rows each) whose rows split evenly into `unit` shares."""
    while groups > 0 and (groups * n) % unit:
        groups -= 1
    return groups


def collect_sync(rollouts, stream, cfg: MedixConfig, step: int) -> StepBatch:
    """Returns the step's groups: `rollouts` is a trainer.rollouts.Rollouts, `stream` a PromptStream."""
    a = cfg.algorithm
    want = cfg.trainer.prompts_per_step
    batch = StepBatch(kept=[], sampled=[], rounds=0)
    while len(batch.kept) < want and batch.rounds < max(1, a.max_sampling_rounds):
        batch.rounds += 1
        missing = want - len(batch.kept)
        ask = missing if batch.rounds == 1 else math.ceil(missing * cfg.trainer.oversample)
        groups, rollout_s, reward_s = rollouts.collect(stream.take(ask), step)
        batch.rollout_s += rollout_s
        batch.reward_s += reward_s
        batch.sampled.extend(groups)
        for g in groups:
            if rollouts.keep(g):
                batch.kept.append(g)
            else:
                g.status = GroupStatus.FILTERED
        if a.dynamic_sampling == "none":
            break
    trimmed = trim_groups(
        min(len(batch.kept), want), cfg.rollout.n, cfg.learner.mini_batches_per_step * cfg.learner.num_workers
    )
    for g in batch.kept[trimmed:]:
        g.status = GroupStatus.FILTERED
    batch.kept = batch.kept[:trimmed]
    return batch
