"""Group-relative advantages.

Shapes: `B` prompts, `G` responses per prompt (the group). Rewards come as `[B, G]`.
"""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor,
    mode: str = "grpo",
    *,
    valid: torch.Tensor | None = None,
    eps: float = 1e-6,
    std_floor: float = 0.0,
) -> torch.Tensor:
    """Returns the advantage of each response, `[B, G]`.

    - `grpo`: (r - mean_g r) / (std_g r + eps), std the unbiased (N - 1) estimator, as the reference;
    - `dr_grpo`: r - mean_g r (no std division, Dr. GRPO).

    `valid` `[B, G]` (bool) leaves responses out of the group statistics (e.g. unscored ones); their
    advantage is 0. A group with fewer than two valid responses has advantage 0 throughout.
    `std_floor` > 0 divides by max(std, std_floor) instead, so near-constant groups are not blown up.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G]; got shape {tuple(rewards.shape)}")
    if mode not in ("grpo", "dr_grpo"):
        raise ValueError(f"unknown advantage mode {mode!r}; expected grpo or dr_grpo")
    rewards = rewards.float()
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    valid = valid & torch.isfinite(rewards)
    w = valid.float()
    r = torch.where(valid, rewards, torch.zeros_like(rewards))
    n = w.sum(dim=1, keepdim=True)
    mean = r.sum(dim=1, keepdim=True) / n.clamp(min=1)
    centred = (r - mean) * w
    adv = centred
    if mode == "grpo":
        var = (centred**2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
        std = var.sqrt()
        if std_floor > 0:
            adv = centred / std.clamp(min=std_floor)
        else:
            adv = centred / (std + eps)
    return torch.where((n >= 2) & valid, adv, torch.zeros_like(adv))
