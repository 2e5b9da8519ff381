"""Rollout and reward for the training loop: samples -> Rollouts (the fleet) -> ScoredGroups (the reward).

    rollouts = Rollouts(cfg, fleet, rewards, timeline, synced_version=lambda: sync.synced_version)
    groups = rollouts.collect(samples, step=3)       # generated and scored, with overlong shaping
    rollouts.keep(groups[0])                         # whether dynamic sampling keeps the group
    rollouts.validate(val_samples, step=3)           # the validation metrics

Every rollout is made by a replica holding at least the fleet's synced version; the timeline gets
one span per replica that served a batch and one for the reward call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from medix_ray.algorithms.sampling import filter_groups, overlong_penalty
from medix_ray.config import MedixConfig
from medix_ray.data.schema import Sample
from medix_ray.rewards.composite import COMPONENTS, RewardItem, component_metric
from medix_ray.trajectory import Rollout, Sampling, ScoredGroup

REWARD_TIMEOUT_S = 1800.0


def mean(values: Sequence[float | None]) -> float | None:
    """Returns the mean of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


class Rollouts:
    """`fleet` is a RolloutFleet, `rewards` the reward application's handle (its `score` method)."""

    def __init__(
        self, cfg: MedixConfig, fleet: Any, rewards: Any, timeline: Any, synced_version: Callable[[], int]
    ) -> None:
        self.cfg = cfg
        self.fleet = fleet
        self.rewards = rewards
        self.timeline = timeline
        self.synced_version = synced_version

    def generate(self, samples: Sequence[Sample], sampling: Sampling, name: str, step: int) -> list[Rollout]:
        """Rolls out on the fleet; the timeline gets one span per replica that served a group."""
        start = self.timeline.now()
        rollouts = self.fleet.generate(samples, sampling, min_version=self.synced_version())
        end = self.timeline.now()
        for replica in sorted({ro.replica for ro in rollouts}):
            mine = [ro for ro in rollouts if ro.replica == replica]
            counts = {"groups": len(mine), "responses": sum(len(ro.responses) for ro in mine)}
            version = min(ro.version for ro in mine)
            self.timeline.record(
                "rollout",
                name,
                start,
                end,
                lane=f"rollout/{replica}",
                step=step,
                version=version,
                replica=replica,
                counts=counts,
            )
        return rollouts

    def score(self, rollouts: Sequence[Rollout], name: str, step: int) -> list[ScoredGroup]:
        """Scores every response with the reward ensemble; rewards get DAPO's overlong shaping when on."""
        items = [
            RewardItem(f"{ro.sample.id}#{g}.{k}", ro.sample.problem, resp.text, ro.sample.solution)
            for g, ro in enumerate(rollouts)
            for k, resp in enumerate(ro.responses)
        ]
        counts = {"responses": len(items)}
        with self.timeline.span("reward", name, step=step, version=self.synced_version(), counts=counts):
            breakdowns = self.rewards.score.remote(items).result(timeout_s=REWARD_TIMEOUT_S)
        a = self.cfg.algorithm
        groups, i = [], 0
        for ro in rollouts:
            bds = breakdowns[i : i + len(ro.responses)]
            i += len(ro.responses)
            shaping = [0.0] * len(ro.responses)
            if a.overlong_shaping:
                lengths = torch.tensor([len(resp.token_ids) for resp in ro.responses])
                penalty = overlong_penalty(lengths, self.cfg.rollout.max_tokens, a.overlong_buffer, a.overlong_penalty)
                shaping = penalty.tolist()
            rewards = [
                None if bd.overall is None else float(bd.overall) + p for bd, p in zip(bds, shaping, strict=True)
            ]
            groups.append(ScoredGroup(ro, rewards, bds))
        return groups

    def collect(self, samples: Sequence[Sample], step: int) -> tuple[list[ScoredGroup], float, float]:
        """Returns the samples' scored groups, with the rollout and reward seconds."""
        t0 = time.monotonic()
        # Read at each call: the config may change between steps (bench/rl_steps.py changes n per cell).
        rollouts = self.generate(samples, Sampling.training(self.cfg.rollout), "generate", step)
        t1 = time.monotonic()
        groups = self.score(rollouts, "score", step)
        return groups, t1 - t0, time.monotonic() - t1

    def produce(self, sample: Sample, step: int) -> ScoredGroup:
        """Async mode: one prompt's group, generated and scored at once (a rollout driver thread)."""
        (group,), group_rollout_s, group_reward_s = self.collect([sample], step)
        group.rollout_s, group.reward_s = group_rollout_s, group_reward_s
        return group

    def keep(self, group: ScoredGroup) -> bool:
        """Returns whether dynamic sampling keeps the group (at least two scored responses, and the filter)."""
        scored = [r for r in group.rewards if r is not None]
        if len(scored) < 2:
            return False
        a = self.cfg.algorithm
        return bool(
            filter_groups(torch.tensor([scored]), a.dynamic_sampling, low=a.filter_low, high=a.filter_high).kept
        )

    def validate(self, samples: Sequence[Sample], step: int) -> dict[str, float | None]:
        """Returns the validation metrics: one response per sample at the validation sampling."""
        t0 = time.monotonic()
        rollouts = self.generate(samples, Sampling.validation(self.cfg.rollout), "validate", step)
        groups = self.score(rollouts, "validate", step)
        bds = [bd for g in groups for bd in g.breakdowns]
        return {
            "val/reward_mean": mean([bd.overall for bd in bds]),
            **{component_metric(c, "val"): mean([getattr(bd, c) for bd in bds]) for c in COMPONENTS},
            "val/unscored": float(sum(bd.overall is None for bd in bds)),
            "time/val_s": time.monotonic() - t0,
        }
