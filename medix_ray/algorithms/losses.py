"""Policy-gradient losses and their aggregation.

Shapes: `N` responses in a micro-batch, `L` response tokens (right-padded); `mask` `[N, L]` is 1 on
real response tokens. Log-probabilities are of the sampled tokens, `[N, L]`; advantages `[N]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOG_RATIO_CLAMP = 20.0


@dataclass
class PolicyLossOutput:
    token_loss: torch.Tensor  # [N, L], zero where mask is 0
    clip_fraction: torch.Tensor  # scalar: share of valid tokens whose ratio was clipped
    ratio_mean: torch.Tensor  # scalar: mean token ratio over valid tokens


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _clipped_loss(
    ratio: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> PolicyLossOutput:
    """Returns the clipped surrogate of per-token `ratio` `[N, L]` and advantages `adv` `[N, 1]`:
    L = max(-A·ratio, -A·clip(ratio, 1 - clip_low, 1 + clip_high))            if A >= 0
    L = min(max(-A·ratio, -A·clip(ratio, ...)), -A·dual_clip)                   if A < 0
    """
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(-adv * ratio, -adv * clipped)
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)
    was_clipped = ((ratio < 1.0 - clip_low) | (ratio > 1.0 + clip_high)).to(ratio.dtype)
    return PolicyLossOutput(loss * mask, _masked_mean(was_clipped, mask).detach(), _masked_mean(ratio, mask).detach())


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
) -> PolicyLossOutput:
    """Returns the per-token PPO-clip loss with decoupled bounds (clip-higher) and dual clip.

    ratio = exp(clamp(logp - old_logp, -20, 20)); per token
        L = max(-A·ratio, -A·clip(ratio, 1 - clip_low, 1 + clip_high))            if A >= 0
        L = min(max(-A·ratio, -A·clip(ratio, ...)), -A·dual_clip)                   if A < 0
    """
    mask = mask.to(logp.dtype)
    adv = advantages.reshape(-1, 1).to(logp.dtype)
    ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    return _clipped_loss(ratio, adv, mask, clip_low, clip_high, dual_clip)


def gspo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip: float | None = 3.0,
) -> PolicyLossOutput:
    """Returns GSPO-token's per-token loss: the sequence ratio s_i = exp(mean_t log ρ_{i,t}) as value,
    per-token gradients (log s_{i,t} = sg[log s_i] + logp_t - sg[logp_t]), clipped to [1 - lo, 1 + hi],
    and for negative advantages bounded by -A·dual_clip, as the reference's GSPO-token loss is."""
    mask = mask.to(logp.dtype)
    adv = advantages.reshape(-1, 1).to(logp.dtype)
    lengths = mask.sum(dim=1, keepdim=True).clamp(min=1)
    seq_log_ratio = (((logp - old_logp) * mask).sum(dim=1, keepdim=True) / lengths).clamp(
        -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP
    )
    ratio = (seq_log_ratio.detach() + logp - logp.detach()).exp()
    return _clipped_loss(ratio, adv, mask, clip_low, clip_high, dual_clip)


AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    norm_length: float | None = None,
    dp_size: int = 1,
) -> torch.Tensor:
    """Returns this micro-batch's share of the mini-batch loss (a scalar), so that summing the shares of all
    micro-batches on all data-parallel ranks gives the mini-batch loss exactly.

    - `token_mean` (DAPO): Σ loss over all valid tokens of the mini-batch / their count (`global_tokens`);
    - `seq_mean_token_mean` (GRPO): mean over sequences of each sequence's token mean (`global_seqs`);
    - `seq_mean_token_sum_norm` (Dr. GRPO): Σ loss / (`global_seqs` · `norm_length`), a constant normaliser.

    `global_*` are counts over the whole mini-batch on every rank (all-reduce them first); without them
    the micro-batch's own counts are used. `dp_size` multiplies back the 1/world_size that data-parallel
    gradient averaging applies, so the update matches a single-process step.
    """
    mask = mask.to(token_loss.dtype)
    if mode == "token_mean":
        denom = global_tokens if global_tokens is not None else mask.sum().clamp(min=1)
        total = token_loss.sum()
    elif mode == "seq_mean_token_mean":
        per_seq = token_loss.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        total = (per_seq * (mask.sum(dim=1) > 0)).sum()
        denom = global_seqs if global_seqs is not None else (mask.sum(dim=1) > 0).sum().clamp(min=1)
    elif mode == "seq_mean_token_sum_norm":
        if norm_length is None:
            raise ValueError("seq_mean_token_sum_norm needs norm_length (e.g. the maximum response length)")
        seqs = global_seqs if global_seqs is not None else token_loss.shape[0]
        total, denom = token_loss.sum(), seqs * norm_length
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {', '.join(AGGREGATIONS)}")
    return total * dp_size / denom


def truncated_is_weight(proximal_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Returns min(π_proximal / π_behaviour, cap) per token, without gradient: the truncated importance
    weight of decoupled PPO, which corrects for trajectories sampled by an older (or numerically
    different) rollout policy. Log-ratios are clamped as in `ppo_clip_loss` before exponentiation; a
    token without a behaviour log-prob (NaN: the engine returned none) weighs 1."""
    log_ratio = torch.nan_to_num((proximal_logp - behaviour_logp).detach(), nan=0.0)
    log_ratio = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return log_ratio.exp().clamp(max=cap)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Returns the per-token KL estimate to the reference policy, `[N, L]`.

    k1: logp - ref; k2: (logp - ref)² / 2; k3 (low-variance): exp(d) - d - 1 with d = clamp(ref - logp, ±20),
    clamped to [-10, 10] as EasyR1 does.
    """
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    if kind == "k3":
        d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return (d.exp() - d - 1).clamp(-10.0, 10.0)
    raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")
