"""What a step reports: its rollout metrics, its console line and its rows of rollouts.jsonl.

metrics = rollout_metrics(batch, version=3)      # reward/*, groups/*, response/*, policy/*, time/*
print(format_step(3, 15, metrics))               # `step 3/15  reward 0.312 (fmt 0.10 llm 0.50) ...`
rows = rollout_records(batch.sampled)            # one record per response
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medix_ray.rewards.composite import COMPONENTS, component_metric
from medix_ray.trainer.rollouts import mean
from medix_ray.trainer.sync_step import StepBatch
from medix_ray.trajectory import ScoredGroup


def rollout_metrics(batch: StepBatch, version: int) -> dict[str, Any]:
    """Returns the step's reward, group, response and policy metrics (`version`: the learner's before the update)."""
    sampled = batch.sampled
    bds = [bd for g in sampled for bd in g.breakdowns]
    responses = [r for g in sampled for r in g.rollout.responses]
    token_logps = [lp for r in responses for lp in r.logprobs]
    m: dict[str, Any] = {
        "reward/mean": mean([bd.overall for bd in bds]),
        **{component_metric(c): mean([getattr(bd, c) for bd in bds]) for c in COMPONENTS},
        "reward/shaped_mean": mean([r for g in sampled for r in g.rewards]),
        "reward/unscored": float(sum(bd.overall is None for bd in bds)),
        "groups/sampled": float(len(sampled)),
        "groups/kept": float(len(batch.kept)),
        "groups/rounds": float(batch.rounds),
        "response/length_mean": mean([float(len(r.token_ids)) for r in responses]),
        "response/truncated_fraction": mean([float(r.truncated) for r in responses]),
        # The mean negative log-prob of the sampled tokens: a Monte Carlo estimate of the token entropy.
        "policy/entropy_est": -sum(token_logps) / len(token_logps) if token_logps else None,
        "policy/version_lag": float(version - min(g.rollout.version for g in sampled)) if sampled else 0.0,
        "time/rollout_s": batch.rollout_s,
        "time/reward_s": batch.reward_s,
    }
    m.update(batch.extra)
    return m


def format_step(step: int, total: int, m: dict[str, Any]) -> str:
    """Returns the one console line of a step: reward, kept groups, the time split and the sync.

    `step 3/15  reward 0.312 (fmt 0.10 llm 0.50)  kept 4/4 in 1 round  time 28.4 s: rollout 2.5 reward 1.0
    update 21.8 sync 0.6`; step 0 is the validation before training.
    """

    def num(key: str, fmt: str = ".3f") -> str:
        value = m.get(key)
        return "-" if value is None else format(value, fmt)

    if step == 0 or "reward/mean" not in m:
        return f"step {step}/{total}  validation reward {num('val/reward_mean')}  ({num('time/val_s', '.1f')} s)"
    parts = [
        f"step {step}/{total}",
        f"reward {num('reward/mean')} (fmt {num('reward/format', '.2f')} llm {num('reward/accuracy_llm', '.2f')})",
        f"kept {num('groups/kept', '.0f')}/{num('groups/sampled', '.0f')} in {num('groups/rounds', '.0f')} round(s)",
        f"time {num('time/step_s', '.1f')} s: rollout {num('time/rollout_s', '.1f')}"
        f" reward {num('time/reward_s', '.1f')} update {num('time/update_s', '.1f')} sync {num('time/sync_s', '.1f')}",
    ]
    if m.get("val/reward_mean") is not None:
        parts.append(f"val {num('val/reward_mean')}")
    return "  ".join(parts)


def rollout_records(groups: Sequence[ScoredGroup]) -> list[dict[str, Any]]:
    """Returns one record per response: sample, policy version, status, text, length, reward, advantage and
    breakdown (rollouts.jsonl)."""
    return [
        {
            "sample_id": g.rollout.sample.id,
            "version": g.rollout.version,
            "status": g.status.value,
            "response": resp.text,
            "tokens": len(resp.token_ids),
            "finish_reason": resp.finish_reason,
            "reward": reward,
            "advantage": None if g.advantages is None else g.advantages[k],
            "breakdown": bd.to_dict(),
        }
        for g in groups
        for k, (resp, reward, bd) in enumerate(zip(g.rollout.responses, g.rewards, g.breakdowns, strict=True))
    ]
