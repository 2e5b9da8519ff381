"""The shared-prefix layout: each GRPO group's prompt computed once, several groups packed padding-free.

A micro-batch of rows (prompt + response, right-padded, as in `PolicyBatch`) becomes one sequence

    [prompt A | A.r1 | A.r2 | A.r3 | prompt B | B.r1 | B.r2]

in which a token attends (causally) to its own group's prompt and to its own response only, and the
position ids of every response continue from the end of its prompt (for Qwen-VL policies, the 3-D
mrope positions of the prompt come from its image grid and the responses continue after their
maximum). The logits kept are those that predict a response token: the last prompt token (shared by
all of the group's responses) and every response token but the last. Log-probs come back in the
batch's `[N, T - 1]` layout, so losses and metrics do not change.

Needs nothing but torch (and the model's own `get_rope_index` for Qwen-VL), so that
`bench/gpu_learner_check.py` runs on a bare GPU machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# The attention backends of the shared-prefix forward; each is exact, they differ in speed and memory.


@dataclass
class PackedRows:
    """One micro-batch's rows in the shared-prefix layout (a batch of one sequence of `length` tokens)."""

    input_ids: torch.Tensor  # [1, L]
    position_ids: torch.Tensor  # [1, L] (text) or [3, 1, L] (mrope)
    group: torch.Tensor  # [L]: the group (0, 1, ...) of each token
    segment: torch.Tensor  # [L]: 0 on a prompt token, k >= 1 on response k of its group
    keep: torch.Tensor  # [K]: positions whose logits are needed
    targets: torch.Tensor  # [M]: the token each scored logit predicts
    source: torch.Tensor  # [M]: index into `keep` of the logits that predict it
    row: torch.Tensor  # [M]: the row of the micro-batch it belongs to
    col: torch.Tensor  # [M]: its column in the `[rows, width - 1]` log-prob layout
    rows: int
    width: int  # the micro-batch's padded row width T
    pixel_values: torch.Tensor | None = None  # each group's images once, in order
    image_grid_thw: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def group_spans(group_ids: torch.Tensor) -> list[tuple[int, int]]:
    """Returns the [start, stop) row spans of consecutive equal group ids."""
    ids = group_ids.tolist()
    spans, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            spans.append((start, i))
            start = i
    return spans


def plan_micro_batches(
    prompt_lens: torch.Tensor, row_lens: torch.Tensor, group_ids: torch.Tensor, max_tokens: int
) -> tuple[list[tuple[int, int]], int]:
    """Returns consecutive row spans whose shared-prefix layout holds at most `max_tokens` tokens, and how
    many spans are over the budget (a single row longer than it: it runs alone).

    A row costs its response tokens, plus its prompt when it is the first row of its group in the
    micro-batch; a group too long for one micro-batch is split (each part recomputes the prompt)."""
    if max_tokens < 1:
        raise ValueError(f"learner.max_tokens_per_micro_batch={max_tokens}: expected a positive token budget")
    spans: list[tuple[int, int]] = []
    over = 0
    start, used = 0, 0
    n = len(row_lens)
    for i in range(n):
        prompt, total = int(prompt_lens[i]), int(row_lens[i])
        joins_group = i > start and int(group_ids[i]) == int(group_ids[i - 1])
        cost = total - prompt if joins_group else total
        if i > start and used + cost > max_tokens:
            spans.append((start, i))
            start, used, cost = i, 0, total
        used += cost
        if i == start and used > max_tokens:
            over += 1
    if n:
        spans.append((start, n))
    return spans, over


def pack_rows(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_lens: torch.Tensor,
    group_ids: torch.Tensor,
    images: Callable[[int], tuple[torch.Tensor | None, torch.Tensor | None]] | None = None,
    rope_index: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
) -> PackedRows:
    """Lays out right-padded rows `[n, T]` in the shared-prefix layout.

    `images(row)` returns that row's (pixel_values, image_grid_thw); `rope_index(prompt_ids [P], grid)`
    returns the prompt's mrope positions `[3, P]` (Qwen-VL); without it positions are 1-D. Rows of one
    group (consecutive equal `group_ids`) must have the same prompt."""
    n, width = input_ids.shape
    lens = attention_mask.sum(dim=1).tolist()
    ids, pos, grp, seg = [], [], [], []
    keep, targets, source, row_of, col_of = [], [], [], [], []
    pixels, grids = [], []
    offset = 0
    for g, (start, stop) in enumerate(group_spans(group_ids)):
        p = int(prompt_lens[start])
        prompt = input_ids[start, :p]
        for r in range(start + 1, stop):
            if int(prompt_lens[r]) != p or not torch.equal(input_ids[r, :p], prompt):
                raise ValueError(
                    f"rows {start} and {r} share group id {int(group_ids[r])} but not their prompt; "
                    "rows of one group must have identical prompt tokens"
                )
        pv, grid = images(start) if images is not None else (None, None)
        if pv is not None:
            pixels.append(pv)
            grids.append(grid)
        if rope_index is not None:
            prompt_pos = rope_index(prompt, grid)  # [3, P]
            next_pos = int(prompt_pos.max()) + 1
        else:
            prompt_pos = torch.arange(p).unsqueeze(0)
            next_pos = p
        ids.append(prompt)
        pos.append(prompt_pos)
        grp.append(torch.full((p,), g))
        seg.append(torch.zeros(p, dtype=torch.long))
        last_prompt = len(keep)
        keep.append(offset + p - 1)
        offset += p
        for k, r in enumerate(range(start, stop), start=1):
            length = int(lens[r]) - p
            if length < 1:
                raise ValueError(f"row {r} has no response tokens after its {p}-token prompt")
            response = input_ids[r, p : p + length]
            ids.append(response)
            pos.append((next_pos + torch.arange(length)).unsqueeze(0).expand(prompt_pos.shape[0], -1))
            grp.append(torch.full((length,), g))
            seg.append(torch.full((length,), k))
            # response token 0 is predicted by the prompt's last token, token j by response token j - 1
            first_keep = len(keep)
            keep.extend(range(offset, offset + length - 1))
            targets.append(response)
            source.append(torch.tensor([last_prompt] + list(range(first_keep, first_keep + length - 1))))
            row_of.append(torch.full((length,), r))
            col_of.append(torch.arange(p - 1, p - 1 + length))
            offset += length
    positions = torch.cat(pos, dim=1)  # [1, L] or [3, L]
    return PackedRows(
        input_ids=torch.cat(ids).unsqueeze(0),
        position_ids=positions.unsqueeze(1) if rope_index is not None else positions,
        group=torch.cat(grp),
        segment=torch.cat(seg),
        keep=torch.tensor(keep, dtype=torch.long),
        targets=torch.cat(targets),
        source=torch.cat(source),
        row=torch.cat(row_of),
        col=torch.cat(col_of),
        rows=n,
        width=width,
        pixel_values=torch.cat(pixels) if pixels else None,
        image_grid_thw=torch.cat(grids) if grids else None,
    )


def dense_mask(group: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Returns the boolean attention mask `[1, 1, L, L]` (True: may attend) of the shared-prefix layout."""
    q_group, k_group = group.unsqueeze(1), group.unsqueeze(0)
    q_seg, k_seg = segment.unsqueeze(1), segment.unsqueeze(0)
    length = group.shape[0]
    causal = torch.ones(length, length, dtype=torch.bool, device=group.device).tril()
    allowed = causal & (q_group == k_group) & ((k_seg == 0) | (k_seg == q_seg))
    return allowed[None, None]


def block_mask(group: torch.Tensor, segment: torch.Tensor):
    """Returns the same mask as `dense_mask` as a FlexAttention `BlockMask` (sparse: skips empty blocks)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, k):
        return (k <= q) & (group[q] == group[k]) & ((segment[k] == 0) | (segment[k] == segment[q]))

    length = group.shape[0]
    return create_block_mask(mask_mod, 1, None, length, length, device=str(group.device))
