"""The training batch: prompt + response token ids, right-padded, with what the loss needs.

Shapes: `N` responses, `T` tokens (prompt + response, right-padded). Log-prob tensors are
`[N, T - 1]`, aligned to the targets `input_ids[:, 1:]`: entry t is log π(input_ids[t + 1] | ≤ t).
For Qwen-VL policies, `pixel_values` is `[P, D]` (all images' patches, concatenated in row order)
and `image_grid_thw` is `[I, 3]`; `images_per_row` says how many images each row owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch


@dataclass
class PolicyBatch:
    input_ids: torch.Tensor  # [N, T] long
    attention_mask: torch.Tensor  # [N, T] long
    loss_mask: torch.Tensor  # [N, T - 1] float: 1 where the target token is a response token
    advantages: torch.Tensor  # [N]
    old_logp: torch.Tensor | None = None  # [N, T - 1]
    ref_logp: torch.Tensor | None = None  # [N, T - 1]
    pixel_values: torch.Tensor | None = None  # [P, D]
    image_grid_thw: torch.Tensor | None = None  # [I, 3]
    images_per_row: list[int] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # other per-row model inputs, [N, T]

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

    def select(self, start: int, stop: int) -> PolicyBatch:
        """Returns rows [start, stop), with their images, trimmed to the longest remaining row."""
        width = int(self.attention_mask[start:stop].sum(dim=1).max().item()) if stop > start else 1
        rows = slice(start, stop)
        pixel_values = grid = None
        images = self.images_per_row[start:stop] if self.images_per_row else []
        if self.pixel_values is not None and self.image_grid_thw is not None:
            first_image = sum(self.images_per_row[:start])
            n_images = sum(images)
            patches = self.image_grid_thw.prod(dim=1)
            p0 = int(patches[:first_image].sum())
            p1 = p0 + int(patches[first_image : first_image + n_images].sum())
            pixel_values = self.pixel_values[p0:p1] if n_images else None
            grid = self.image_grid_thw[first_image : first_image + n_images] if n_images else None

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
            pixel_values=pixel_values,
            image_grid_thw=grid,
            images_per_row=images,
            extra={k: v[rows, :width] for k, v in self.extra.items()},
        )

    def micro_batches(self, size: int) -> list[PolicyBatch]:
        """Returns consecutive slices of at most `size` rows."""
        return [self.select(i, min(i + size, self.size)) for i in range(0, self.size, size)]


def build_batch(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    advantages: Sequence[float] | torch.Tensor,
    pad_id: int,
    *,
    old_logp: Sequence[Sequence[float]] | None = None,
) -> PolicyBatch:
    """Returns a right-padded text batch; `old_logp` (per response token, e.g. from vLLM) is placed on
    the response positions of the `[N, T - 1]` grid."""
    if not (len(prompt_ids) == len(response_ids) == len(advantages)):
        raise ValueError(f"{len(prompt_ids)} prompts, {len(response_ids)} responses, {len(advantages)} advantages")
    for i, r in enumerate(response_ids):
        if len(r) == 0:
            raise ValueError(f"response {i} is empty; drop it before building the batch")
    n = len(prompt_ids)
    width = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids, strict=True))
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width - 1), dtype=torch.float32)
    old = torch.zeros((n, width - 1), dtype=torch.float32) if old_logp is not None else None
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        seq = list(p) + list(r)
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        # target position t predicts token t + 1: response tokens are targets len(p) - 1 .. len(seq) - 2
        loss_mask[i, len(p) - 1 : len(seq) - 1] = 1.0
        if old is not None:
            if len(old_logp[i]) != len(r):
                raise ValueError(f"row {i}: {len(old_logp[i])} old log-probs for {len(r)} response tokens")
            old[i, len(p) - 1 : len(seq) - 1] = torch.tensor(old_logp[i], dtype=torch.float32)
    adv = torch.as_tensor(advantages, dtype=torch.float32)
    return PolicyBatch(input_ids, attention, loss_mask, adv, old_logp=old)


def build_sample_batch(
    samples: Sequence,
    response_ids: Sequence[Sequence[int]],
    advantages: Sequence[float] | torch.Tensor,
    renderer,
    style=None,
) -> PolicyBatch:
    """Returns the batch of (sample, response) pairs, prompts encoded by the policy's own tokenizer or
    processor (images become `pixel_values` / `image_grid_thw`, in row order)."""
    from medix_ray.data.prompts import PromptStyle, is_multimodal, render_prompt

    style = style or PromptStyle()
    multimodal = is_multimodal(renderer)
    prompt_ids, pixel_values, grids, images_per_row = [], [], [], []
    for sample in samples:
        text = render_prompt(sample, renderer, style)
        if multimodal and sample.images:
            enc = renderer(text=[text], images=sample.load_images(), return_tensors="pt")
            pixel_values.append(enc["pixel_values"])
            grids.append(enc["image_grid_thw"])
            images_per_row.append(len(sample.images))
        else:
            tok = renderer.tokenizer if multimodal else renderer
            enc = {"input_ids": tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]}
            images_per_row.append(0)
        prompt_ids.append(enc["input_ids"][0].tolist())
    tok = renderer.tokenizer if multimodal else renderer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batch = build_batch(prompt_ids, response_ids, advantages, pad_id)
    if pixel_values:
        batch.pixel_values = torch.cat(pixel_values)
        batch.image_grid_thw = torch.cat(grids)
        batch.images_per_row = images_per_row
    return batch
