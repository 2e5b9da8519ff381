"""Builds the training batch (`PolicyBatch`, medix_ray/trajectory.py): prompt + response token ids, right-padded.

Shapes: `N` responses, `T` tokens (prompt + response, right-padded). Log-prob tensors are
`[N, T - 1]`, aligned to the targets `input_ids[:, 1:]`: entry t is log π(input_ids[t + 1] | ≤ t).
For Qwen-VL policies, `pixel_values` is `[P, D]` (all images' patches, concatenated in row order)
and `image_grid_thw` is `[I, 3]`; `images_per_row` says how many images each row owns.
`prompt_lens` `[N]` and `group_ids` `[N]` (consecutive rows with one id share their prompt: a GRPO
group) serve the shared-prefix layout (packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medix_ray.trajectory import PolicyBatch, ProcessedImages


def build_batch(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    advantages: Sequence[float] | torch.Tensor,
    pad_id: int,
    *,
    old_logp: Sequence[Sequence[float]] | None = None,
    behaviour_logp: Sequence[Sequence[float]] | None = None,
    group_ids: Sequence[int] | None = None,
) -> PolicyBatch:
    """Returns a right-padded text batch; `old_logp` and `behaviour_logp` (per response token, e.g. from
    vLLM) are placed on the response positions of the `[N, T - 1]` grid. `group_ids` (default: consecutive rows with
    identical prompt tokens form a group) say which rows share their prompt."""
    if not (len(prompt_ids) == len(response_ids) == len(advantages)):
        raise ValueError(f"{len(prompt_ids)} prompts, {len(response_ids)} responses, {len(advantages)} advantages")
    if group_ids is None:
        group_ids = consecutive_groups([tuple(p) for p in prompt_ids])
    elif len(group_ids) != len(prompt_ids):
        raise ValueError(f"{len(group_ids)} group ids for {len(prompt_ids)} rows")
    for i, r in enumerate(response_ids):
        if len(r) == 0:
            raise ValueError(f"response {i} is empty; drop it before building the batch")
    n = len(prompt_ids)
    width = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids, strict=True))
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width - 1), dtype=torch.float32)
    per_token = {"old": old_logp, "behaviour": behaviour_logp}
    grids = {k: torch.zeros((n, width - 1), dtype=torch.float32) for k, v in per_token.items() if v is not None}
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        seq = list(p) + list(r)
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        # target position t predicts token t + 1: response tokens are targets len(p) - 1 .. len(seq) - 2
        loss_mask[i, len(p) - 1 : len(seq) - 1] = 1.0
        for kind, grid in grids.items():
            values = per_token[kind][i]
            if len(values) != len(r):
                raise ValueError(f"row {i}: {len(values)} {kind} log-probs for {len(r)} response tokens")
            grid[i, len(p) - 1 : len(seq) - 1] = torch.tensor(values, dtype=torch.float32)
    adv = torch.as_tensor(advantages, dtype=torch.float32)
    return PolicyBatch(
        input_ids,
        attention,
        loss_mask,
        adv,
        old_logp=grids.get("old"),
        behaviour_logp=grids.get("behaviour"),
        prompt_lens=torch.tensor([len(p) for p in prompt_ids], dtype=torch.long),
        group_ids=torch.as_tensor(list(group_ids), dtype=torch.long),
    )


def consecutive_groups(keys: Sequence) -> list[int]:
    """Returns group ids 0, 1, ... in which consecutive equal keys share one id."""
    ids: list[int] = []
    current = -1
    for i, key in enumerate(keys):
        if i == 0 or key != keys[i - 1]:
            current += 1
        ids.append(current)
    return ids


def build_sample_batch(
    samples: Sequence,
    response_ids: Sequence[Sequence[int]],
    advantages: Sequence[float] | torch.Tensor,
    renderer,
    fmt=None,
    bounds=None,
) -> PolicyBatch:
    """Returns the batch of (sample, response) pairs, prompts encoded by the policy's own tokenizer or
    processor (images fitted into `bounds`, then `pixel_values` / `image_grid_thw`, in row order)."""
    from medix_ray.data.images import PixelBounds, load_fitted
    from medix_ray.data.output_format import OutputFormat
    from medix_ray.data.prompts import is_multimodal, render_prompt

    fmt = fmt or OutputFormat()
    bounds = bounds or PixelBounds()
    multimodal = is_multimodal(renderer)
    prompt_ids, pixel_values, grids, images_per_row = [], [], [], []
    for sample in samples:
        text = render_prompt(sample, renderer, fmt)
        if multimodal and sample.images:
            enc = renderer(text=[text], images=load_fitted(sample, bounds), return_tensors="pt")
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
    groups = consecutive_groups([s.id for s in samples])  # a sample's n responses share its prompt
    batch = build_batch(prompt_ids, response_ids, advantages, pad_id, group_ids=groups)
    if pixel_values:
        batch.pixel_values = torch.cat(pixel_values)
        batch.image_grid_thw = torch.cat(grids)
        batch.images_per_row = images_per_row
    return batch


def process_images(images: Sequence, renderer) -> ProcessedImages:
    """Returns a prompt's decoded, fitted images as the policy's image processor makes them (the rollout
    replica calls it once per sample; the learner batch reuses the result)."""
    encoded = renderer.image_processor(images=list(images), return_tensors="pt")
    return ProcessedImages(encoded["pixel_values"], encoded["image_grid_thw"])


def build_rollout_batch(
    sample_ids: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    advantages: Sequence[float] | torch.Tensor,
    renderer,
    images: Sequence[ProcessedImages | None] | None = None,
    behaviour_logp: Sequence[Sequence[float]] | None = None,
) -> PolicyBatch:
    """Returns the batch of rollouts from the rollout engine's own prompt token ids and processed images (no
    second rendering, no second decoding): one row per response; `sample_ids[i]`, `prompt_ids[i]` and
    `images[i]` the prompt it answered (rows of one sample are consecutive: a group); `behaviour_logp` the
    engine's log-probs of the response tokens (async mode). A prompt whose image tokens do not match its
    images' grids raises ValueError naming the sample."""
    from medix_ray.data.prompts import is_multimodal

    if not (len(sample_ids) == len(prompt_ids) == len(response_ids)):
        raise ValueError(f"{len(sample_ids)} samples, {len(prompt_ids)} prompts, {len(response_ids)} responses")
    images = list(images) if images is not None else [None] * len(sample_ids)
    if len(images) != len(sample_ids):
        raise ValueError(f"{len(images)} image entries for {len(sample_ids)} rows")
    multimodal = is_multimodal(renderer)
    tok = renderer.tokenizer if multimodal else renderer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batch = build_batch(
        prompt_ids,
        response_ids,
        advantages,
        pad_id,
        behaviour_logp=behaviour_logp,
        group_ids=consecutive_groups(list(sample_ids)),
    )
    if not any(im is not None for im in images):
        return batch
    if not multimodal:
        raise ValueError(
            f"rows carry images but the policy's renderer has no image processor (sample {sample_ids[0]!r})"
        )
    image_token = tok.convert_tokens_to_ids(renderer.image_token)
    merge = renderer.image_processor.merge_size
    pixel_values, grids, images_per_row = [], [], []
    for sample_id, ids, row_images in zip(sample_ids, prompt_ids, images, strict=True):
        if row_images is None:
            images_per_row.append(0)
            continue
        grid = row_images.grid_thw
        expected = int(grid.prod(dim=1).sum()) // merge**2
        found = sum(1 for t in ids if t == image_token)
        if found != expected:
            raise ValueError(
                f"sample {sample_id!r}: the rollout prompt holds {found} image tokens, its images' grids "
                f"{grid.tolist()} make {expected}; the rollout and the learner fitted the images differently"
            )
        pixel_values.append(row_images.pixel_values)
        grids.append(grid)
        images_per_row.append(int(grid.shape[0]))
    batch.pixel_values = torch.cat(pixel_values)
    batch.image_grid_thw = torch.cat(grids)
    batch.images_per_row = images_per_row
    return batch
