"""The learner's part of a step: advantages, the PolicyBatch, the learner group's calls, their metrics.

    metrics = learn(learner, renderer, kept_groups, cfg, timeline, step=4, version=3)

The batch is built from what the rollout replicas returned: their prompt token ids and processed
images (nothing is rendered or decoded again), one row per response. Unscored responses take no
part in the update (their loss mask is zero). In async mode the engine's log-probs are the
behaviour policy of the truncated importance weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from medix_ray.algorithms.advantages import group_advantages
from medix_ray.config import MedixConfig
from medix_ray.trainer.rollouts import mean
from medix_ray.trajectory import ScoredGroup, UpdateStats


def eos_token_id(renderer: Any) -> int:
    """Returns the policy's end-of-sequence token (an empty response trains on it)."""
    return int(getattr(renderer, "tokenizer", renderer).eos_token_id)


def learn(
    learner: Any,
    renderer: Any,
    kept: Sequence[ScoredGroup],
    cfg: MedixConfig,
    timeline: Any,
    *,
    step: int,
    version: int,
) -> dict[str, Any]:
    """Updates the learner group on the kept groups; sets each group's advantages; returns the metrics."""
    from medix_ray.learner.batch import build_rollout_batch

    rewards = torch.tensor([[math.nan if r is None else r for r in g.rewards] for g in kept], dtype=torch.float32)
    valid = torch.tensor([g.valid for g in kept])
    adv = group_advantages(rewards, cfg.algorithm.advantage, valid=valid)  # [groups, n]
    for g, row in zip(kept, adv.tolist(), strict=True):
        g.advantages = row
    rows = [(g.rollout, r) for g in kept for r in g.rollout.responses]
    eos = eos_token_id(renderer)
    behaviour = None
    if cfg.trainer.mode == "async":  # the engine's log-probs: the behaviour policy (NaN: none, weight 1)
        behaviour = [r.logprobs if r.token_ids else [math.nan] for _, r in rows]
    batch = build_rollout_batch(
        [ro.sample.id for ro, _ in rows],
        [ro.prompt_token_ids for ro, _ in rows],
        [r.token_ids or [eos] for _, r in rows],
        adv.reshape(-1),
        renderer,
        images=[ro.images for ro, _ in rows],
        behaviour_logp=behaviour,
    )
    batch.loss_mask[~valid.reshape(-1)] = 0.0  # unscored responses take no part in the update
    t0 = time.monotonic()
    phase = {"step": step, "version": version, "counts": {"groups": len(kept)}}
    with learner.lock:  # the weight sync may re-sync a replica from a rollout thread meanwhile
        if cfg.learner.mini_batches_per_step > 1:
            with timeline.span("learner", "logprobs", **phase):
                batch.old_logp = learner.compute_logprobs(batch)
        if cfg.algorithm.kl_coef > 0:
            with timeline.span("learner", "ref_logprobs", **phase):
                batch.ref_logp = learner.compute_ref_logprobs(batch)
        with timeline.span("learner", "update", **phase):
            stats = learner.update(batch)
    return {
        **update_metrics(stats, off_policy=behaviour is not None),
        "time/update_s": time.monotonic() - t0,
        "update/advantage_abs_mean": float(adv[valid].abs().mean()) if bool(valid.any()) else 0.0,
    }


def update_metrics(stats: Sequence[UpdateStats], off_policy: bool = False) -> dict[str, Any]:
    """Returns the metrics of one update's mini-batches (rank 0's statistics)."""
    m: dict[str, Any] = {
        "update/loss": mean([s.loss for s in stats]),
        "update/clip_fraction": mean([s.clip_fraction for s in stats]),
        "update/ratio_mean": mean([s.ratio_mean for s in stats]),
        "update/kl": mean([s.kl for s in stats]),
        "update/grad_norm": mean([s.grad_norm for s in stats]),
        "update/tokens": float(sum(s.tokens for s in stats)),
        "update/attention": stats[0].attention,  # the attention path (docs/learner.md)
        "update/micro_batches": float(sum(s.micro_batches for s in stats)),
        "update/over_budget_micro_batches": float(sum(s.over_budget for s in stats)),
    }
    if off_policy:
        m["offpolicy/is_weight_mean"] = mean([s.is_weight_mean for s in stats])
        m["offpolicy/is_truncated_fraction"] = mean([s.is_truncated_fraction for s in stats])
    return m
