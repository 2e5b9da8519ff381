"""Group filters (dynamic sampling) and overlong shaping.

Shapes: `B` prompts, `G` responses per prompt; rewards `[B, G]`; lengths `[N]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FilterResult:
    keep: torch.Tensor  # [B] bool
    kept: int
    total: int


def filter_groups(
    rewards: torch.Tensor, mode: str = "zero_variance", *, low: float = 0.01, high: float = 0.99, eps: float = 1e-8
) -> FilterResult:
    """Returns which groups to keep.

    - `zero_variance` (DAPO dynamic sampling): drop groups whose rewards are all equal (no gradient);
    - `mean_range` (the reference's online filter): keep groups with low < mean < high — note it keeps
      zero-variance groups whose mean is in range;
    - `none`: keep every group.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G]; got shape {tuple(rewards.shape)}")
    if mode == "zero_variance":
        keep = (rewards.max(dim=1).values - rewards.min(dim=1).values) > eps
    elif mode == "mean_range":
        mean = rewards.mean(dim=1)
        keep = (mean > low) & (mean < high)
    elif mode == "none":
        keep = torch.ones(rewards.shape[0], dtype=torch.bool)
    else:
        raise ValueError(f"unknown dynamic sampling mode {mode!r}; expected zero_variance, mean_range or none")
    return FilterResult(keep, int(keep.sum()), rewards.shape[0])


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """Returns DAPO's soft overlong punishment per response, `[N]` (added to the task reward):
    0 up to max_length - buffer, then falling linearly to -factor at max_length, -factor beyond."""
    if buffer <= 0 or buffer > max_length:
        raise ValueError(f"overlong buffer must be in (0, max_length]; got {buffer} for max_length {max_length}")
    expected = max_length - buffer
    lengths = lengths.float()
    ramp = (expected - lengths) / buffer
    penalty = torch.where(lengths <= expected, torch.zeros_like(lengths), ramp)
    return torch.where(lengths > max_length, torch.full_like(lengths, -1.0), penalty) * factor
