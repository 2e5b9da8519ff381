"""The records of one training step, as they cross process boundaries.

One step, and the record each boundary carries (docs/architecture.md has the picture):

    controller ──Sampling──► rollout replica ──Rollout──► controller      (deployments/rollout_app.py)
    controller ──[RewardItem]──► reward ensemble ──[RewardBreakdown]──►   (deployments/reward_app.py)
    controller: Rollout + rewards ──► ScoredGroup (status: GroupStatus)   (medix_ray/trainer/)
    controller ──PolicyBatch (in a LearnerCall)──► learner ranks ──[UpdateStats]──►  (medix_ray/learner/)
    learner rank 0 ──buckets──► replicas ──PushReply──► controller: SyncReport  (medix_ray/sync/)

Shapes: `N` rows (responses), `T` tokens of prompt + response, right-padded; per-token log-prob
tensors are `[N, T - 1]`, aligned to the targets `input_ids[:, 1:]`. `P` image patches of `D`
values, `I` images. Times are seconds, sizes bytes.

Nothing here is a dict keyed by strings, and no status is a string to match: a replica that holds
stale weights raises `StaleWeights`, a group's fate is a `GroupStatus`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from medix_ray.data.schema import Sample
from medix_ray.rewards.composite import RewardBreakdown

__all__ = [
    "GroupStatus",
    "PolicyBatch",
    "ProcessedImages",
    "ReplicaInfo",
    "ReplicaUnhealthy",
    "Response",
    "Rollout",
    "RewardBreakdown",
    "Sampling",
    "ScoredGroup",
    "StaleWeights",
    "UpdateStats",
]


# -- rollout --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """The sampling parameters of one rollout request (vLLM's names); `top_k` -1 = off."""

    n: int = 1  # responses per prompt (the GRPO group size)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256  # response tokens at most

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError(f"sampling needs n >= 1 and max_tokens >= 1; got n={self.n}, max_tokens={self.max_tokens}")

    @classmethod
    def training(cls, rollout_cfg: Any) -> Sampling:
        """Returns the training rollouts' parameters (`rollout.*`)."""
        r = rollout_cfg
        return cls(r.n, r.temperature, r.top_p, r.top_k, r.max_tokens)

    @classmethod
    def validation(cls, rollout_cfg: Any) -> Sampling:
        """Returns the validation rollouts' parameters: one response at `rollout.val_temperature` / `val_top_p`."""
        r = rollout_cfg
        return cls(1, r.val_temperature, r.val_top_p, -1, r.max_tokens)


@dataclass(frozen=True)
class ProcessedImages:
    """A prompt's images as the policy's image processor made them (decoded and fitted once, in the replica)."""

    pixel_values: torch.Tensor  # [P, D] float
    grid_thw: torch.Tensor  # [I, 3] long: each image's (t, h, w) patch grid


@dataclass(frozen=True)
class Response:
    """One sampled response: its tokens, the engine's log-probs of them, and why it stopped."""

    text: str
    token_ids: list[int]  # [L]
    logprobs: list[float]  # [L]: log π_behaviour(token_ids[i] | ...) as the engine sampled it
    finish_reason: str  # vLLM's: "stop" or "length"

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True)
class Rollout:
    """A rollout replica's reply: the n responses to one sample, made with one policy version."""

    sample: Sample
    responses: list[Response]  # [n]
    version: int  # the policy version (learner updates) the replica held
    replica: str  # the Serve replica id
    prompt_token_ids: list[int]  # the prompt as the engine tokenized it (image tokens expanded)
    images: ProcessedImages | None = None  # the sample's images, for the learner batch (None: text only)


@dataclass(frozen=True)
class ReplicaInfo:
    """A rollout replica's state, as the weight sync reads it before a push."""

    replica: str
    version: int  # the policy version it serves
    dtype: str  # its engine's parameter dtype (what a push casts to)
    backend: str  # its weight-sync backend: gloo or nccl
    healthy: bool  # its vLLM engine is alive
    refusing: str  # why it refuses requests ("" = serving)
    sync_ranks: int  # one weight-sync rank per vLLM worker (tensor parallelism)
    pid: int


class StaleWeights(RuntimeError):
    """A replica refused a request: it holds an older policy than asked, or its last push was rejected.

    Retryable: the weight sync re-forms its group and pushes again (medix_ray/sync/coordinator.py)."""

    def __init__(self, replica: str, reason: str):
        super().__init__(f"stale weights: replica {replica} refuses requests: {reason}")
        self.replica = replica
        self.reason = reason

    def __reduce__(self):  # Ray ships the error from the replica: keep the fields
        return (StaleWeights, (self.replica, self.reason))


class ReplicaUnhealthy(RuntimeError):
    """A replica's engine died; Serve replaces the replica, and a retry goes to a live one."""

    def __init__(self, replica: str):
        super().__init__(f"rollout replica {replica} is unhealthy: its vLLM engine died")
        self.replica = replica

    def __reduce__(self):
        return (ReplicaUnhealthy, (self.replica,))


# -- reward ---------------------------------------------------------------------------------------
class GroupStatus(enum.StrEnum):
    """What became of a prompt's group (rollouts.jsonl writes the value)."""

    KEPT = "kept"  # trained on
    FILTERED = "filtered"  # dropped by dynamic sampling, unscored, or trimmed to fit the ranks
    STALE = "stale"  # async mode: older than trainer.max_staleness at its update


@dataclass
class ScoredGroup:
    """One prompt's group from rollout through reward to the learner batch."""

    rollout: Rollout
    rewards: list[float | None]  # [n]: composite reward + overlong shaping (None: unscored)
    breakdowns: list[RewardBreakdown]  # [n]
    advantages: list[float] | None = None  # [n], set by the update that trains on the group
    status: GroupStatus = GroupStatus.KEPT
    rollout_s: float = 0.0  # async mode: this group's generation and scoring times
    reward_s: float = 0.0

    @property
    def valid(self) -> list[bool]:
        return [r is not None for r in self.rewards]


# -- learner --------------------------------------------------------------------------------------
@dataclass
class PolicyBatch:
    """The learner batch: prompt + response token ids, right-padded, with what the loss needs.

    For Qwen-VL policies `pixel_values` / `image_grid_thw` hold all rows' images in row order and
    `images_per_row` says how many each row owns. `prompt_lens` and `group_ids` (consecutive rows with
    one id share their prompt: a GRPO group) serve the shared-prefix layout (learner/packing.py)."""

    input_ids: torch.Tensor  # [N, T] long
    attention_mask: torch.Tensor  # [N, T] long
    loss_mask: torch.Tensor  # [N, T - 1] float: 1 where the target token is a response token
    advantages: torch.Tensor  # [N]
    old_logp: torch.Tensor | None = None  # [N, T - 1]
    ref_logp: torch.Tensor | None = None  # [N, T - 1]
    # [N, T - 1]: the rollout engine's log-probs of the sampled tokens (the behaviour policy of async mode)
    behaviour_logp: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None  # [P, D]
    image_grid_thw: torch.Tensor | None = None  # [I, 3]
    images_per_row: list[int] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # other per-row model inputs, [N, T]
    prompt_lens: torch.Tensor | None = None  # [N] long: prompt tokens of each row
    group_ids: torch.Tensor | None = None  # [N] long: rows with one id (consecutive) share their prompt

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def response_tokens(self) -> int:
        return int(self.loss_mask.sum().item())

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Returns the keyword arguments of the model's forward."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, **self.extra}
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
            inputs["image_grid_thw"] = self.image_grid_thw
        return inputs

    def _images(self, start: int, stop: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns the (pixel_values, image_grid_thw) of rows [start, stop), or (None, None) without images."""
        if self.pixel_values is None or self.image_grid_thw is None:
            return None, None
        first_image = sum(self.images_per_row[:start])
        n_images = sum(self.images_per_row[start:stop])
        if not n_images:
            return None, None
        patches = self.image_grid_thw.prod(dim=1)
        p0 = int(patches[:first_image].sum())
        p1 = p0 + int(patches[first_image : first_image + n_images].sum())
        return self.pixel_values[p0:p1], self.image_grid_thw[first_image : first_image + n_images]

    def row_images(self, row: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns one row's (pixel_values, image_grid_thw)."""
        return self._images(row, row + 1)

    def select(self, start: int, stop: int) -> PolicyBatch:
        """Returns rows [start, stop), with their images, trimmed to the longest remaining row."""
        width = int(self.attention_mask[start:stop].sum(dim=1).max().item()) if stop > start else 1
        rows = slice(start, stop)
        images = self.images_per_row[start:stop] if self.images_per_row else []
        pixel_values, grid = self._images(start, stop)

        def cut(t: torch.Tensor | None, w: int) -> torch.Tensor | None:
            return None if t is None else t[rows, :w]

        return replace(
            self,
            input_ids=cut(self.input_ids, width),
            attention_mask=cut(self.attention_mask, width),
            loss_mask=cut(self.loss_mask, width - 1),
            advantages=self.advantages[rows],
            old_logp=cut(self.old_logp, width - 1),
            ref_logp=cut(self.ref_logp, width - 1),
            behaviour_logp=cut(self.behaviour_logp, width - 1),
            pixel_values=pixel_values,
            image_grid_thw=grid,
            images_per_row=images,
            extra={k: v[rows, :width] for k, v in self.extra.items()},
            prompt_lens=None if self.prompt_lens is None else self.prompt_lens[rows],
            group_ids=None if self.group_ids is None else self.group_ids[rows],
        )


@dataclass(frozen=True)
class UpdateStats:
    """Metrics of one mini-batch update on one rank (the learner group returns rank 0's)."""

    loss: float
    clip_fraction: float  # fraction of response tokens whose ratio was clipped
    ratio_mean: float  # mean π / π_old over response tokens
    kl: float  # mean KL to the reference (0 without one)
    tokens: int  # response tokens in the mini-batch (this rank)
    grad_norm: float | None
    attention: str = ""  # the attention path of the forward (learner/logprobs.py:attention_backend)
    micro_batches: int = 0
    # Async mode (batch.behaviour_logp set): the truncated importance weights min(π_old / π_behaviour, cap)
    is_weight_mean: float | None = None
    is_truncated_fraction: float | None = None
    over_budget: int = 0  # micro-batches over learner.max_tokens_per_micro_batch (a single row longer than it)
