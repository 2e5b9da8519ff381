"""One policy update: k mini-batches, each split into micro-batches, with exact loss aggregation.

The same code drives a DeepSpeed engine (the learner group) and a plain PyTorch model + optimizer
(tests, the single-process baseline). The mini-batch loss is aggregated over *all* its valid
tokens (or sequences) on every data-parallel rank — counts are all-reduced first — so the update
does not depend on the micro-batch size or the number of workers (DAPO's token-level loss done
right under gradient accumulation).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.distributed as dist

from medix_ray.algorithms.losses import (
    aggregate_loss,
    gspo_token_loss,
    kl_penalty,
    ppo_clip_loss,
    truncated_is_weight,
)
from medix_ray.config import AlgorithmConfig
from medix_ray.learner.logprobs import Layout, attention_backend, forward_logprobs
from medix_ray.trajectory import PolicyBatch, UpdateStats


class TrainEngine(Protocol):
    module: torch.nn.Module

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        """Accumulates gradients; `boundary` marks the last micro-batch of a mini-batch."""
        ...

    def step(self) -> None:
        """Called after every micro-batch; applies the optimizer after a boundary backward."""
        ...

    def grad_norm(self) -> float | None: ...


FUSED_ADAMW_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # torch's fused CPU AdamW takes these


def adamw(params, lr: float, betas, weight_decay: float) -> torch.optim.AdamW:
    """Returns the AdamW of a learner whose optimizer runs in torch (CPU: the DeepSpeed engine hands ZeRO a
    torch optimizer, docs/learner.md). Parameters on CPU get torch's fused kernel, one pass over the state:
    0.09 s a step for 135M fp32 parameters on 2 cores against 0.53 s for the per-op loop (torch's CPU
    default), measured 2026-12-07."""
    params = list(params)
    fused = bool(params) and all(p.device.type == "cpu" and p.dtype in FUSED_ADAMW_DTYPES for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused or None)


class TorchEngine:
    """A plain model + AdamW: the single-process baseline of bench/learner_step.py (and the tests' engine)."""

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float = 1e-6,
        betas=(0.9, 0.999),
        weight_decay: float = 0.01,
        grad_clip: float = 1.0,
    ):
        self.module = model
        self.optimizer = adamw(model.parameters(), lr, betas, weight_decay)
        self.grad_clip = grad_clip
        self._boundary = False
        self._last_norm: float | None = None

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        loss.backward()
        self._boundary = boundary

    def step(self) -> None:
        if not self._boundary:
            return
        self._last_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def grad_norm(self) -> float | None:
        return self._last_norm


def _global_counts(batch: PolicyBatch) -> tuple[float, float]:
    """Returns (valid tokens, valid sequences) of the mini-batch summed over data-parallel ranks."""
    counts = torch.tensor([batch.loss_mask.sum().item(), float((batch.loss_mask.sum(dim=1) > 0).sum())])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(counts)
    return float(counts[0]), float(counts[1])


def _dp_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def minibatch_update(
    engine: TrainEngine,
    batch: PolicyBatch,
    algo: AlgorithmConfig,
    *,
    layout: Layout,
    norm_length: int | None = None,
    temperature: float = 1.0,
    on_policy: bool = False,
) -> UpdateStats:
    """Applies one optimizer step on this rank's share of a mini-batch; returns its metrics.

    `batch.old_logp` must be set (from the rollout engine or `batch_logprobs` before the update),
    unless `on_policy`: the first and only mini-batch after a rollout, whose old policy is the
    current one, so the detached current log-probs serve (one forward pass saved);
    `batch.ref_logp` must be set too when `algo.kl_coef` > 0. With `batch.behaviour_logp` (async mode:
    the rollout engine's log-probs), each token's loss is weighted by min(π_old / π_behaviour,
    `algo.tis_cap`).
    """
    if batch.old_logp is None and not on_policy:
        raise ValueError("the batch has no old_logp: compute them before the update")
    if algo.kl_coef > 0 and batch.ref_logp is None:
        raise ValueError("algorithm.kl_coef > 0 needs ref_logp in the batch")
    global_tokens, global_seqs = _global_counts(batch)
    dp = _dp_size()
    total = clip = ratio = kl_sum = is_sum = truncated = 0.0
    plan = layout.plan(batch)
    micros = [batch.select(a, b) for a, b in plan.spans]
    for index, micro in enumerate(micros):
        logp = forward_logprobs(engine.module, micro, temperature, layout.shared_prefix)
        device = logp.device
        old_logp = logp.detach() if micro.old_logp is None else micro.old_logp.to(device)
        mask = micro.loss_mask.to(device)
        advantages = micro.advantages.to(device)
        policy_loss = gspo_token_loss if algo.name == "gspo" else ppo_clip_loss
        out = policy_loss(
            logp,
            old_logp,
            advantages,
            mask,
            clip_low=algo.clip_low,
            clip_high=algo.clip_high,
            dual_clip=algo.dual_clip,
        )
        token_loss = out.token_loss
        if micro.behaviour_logp is not None:
            # Decoupled PPO: the clip is taken against the proximal policy (old_logp), and each token is
            # weighted by the truncated importance ratio of the proximal to the behaviour policy.
            is_weight = truncated_is_weight(old_logp, micro.behaviour_logp.to(device), algo.tis_cap)
            token_loss = token_loss * is_weight
            if not plan.is_padding(index):
                is_sum += float((is_weight * mask).sum())
                truncated += float(((is_weight >= algo.tis_cap) * mask).sum())
        if algo.kl_coef > 0:
            kl = kl_penalty(logp, micro.ref_logp.to(device), algo.kl_estimator) * mask
            token_loss = token_loss + algo.kl_coef * kl
            kl_sum += 0.0 if plan.is_padding(index) else float(kl.detach().sum())
        share = aggregate_loss(
            token_loss,
            mask,
            algo.loss_agg,
            global_tokens=global_tokens,
            global_seqs=global_seqs,
            norm_length=norm_length,
            dp_size=dp,
        )
        if plan.is_padding(index):  # keeps this rank in step with the others; adds nothing
            engine.backward(share * 0.0, boundary=index == len(micros) - 1)
            engine.step()
            continue
        engine.backward(share, boundary=index == len(micros) - 1)
        engine.step()
        weight = float(mask.sum())
        total += float(share.detach()) / dp
        clip += float(out.clip_fraction) * weight
        ratio += float(out.ratio_mean) * weight
    local_tokens = max(float(batch.loss_mask.sum()), 1.0)
    return UpdateStats(
        loss=total,
        clip_fraction=clip / local_tokens,
        ratio_mean=ratio / local_tokens,
        kl=kl_sum / local_tokens,
        tokens=int(batch.loss_mask.sum()),
        grad_norm=engine.grad_norm(),
        attention=attention_backend(engine.module, layout.shared_prefix),
        micro_batches=len(micros),
        is_weight_mean=is_sum / local_tokens if batch.behaviour_logp is not None else None,
        is_truncated_fraction=truncated / local_tokens if batch.behaviour_logp is not None else None,
        over_budget=plan.over_budget,
    )
