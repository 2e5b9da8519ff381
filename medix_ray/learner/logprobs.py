"""Token log-probabilities of a batch under a causal LM or Qwen-VL policy, per row or shared-prefix.

Two layouts give the same numbers (tests/learner/test_shared_prefix.py):
- per row: each row `[prompt, response]` right-padded, `micro_batch_size` rows per forward;
- shared prefix (`learner.shared_prefix`, packing.py): each group's prompt once, then its responses,
  several groups packed into one sequence of at most `max_tokens_per_micro_batch` tokens.

    layout = Layout.from_config(cfg.learner)
    logp = batch_logprobs(model, batch, layout)       # [N, T - 1], zero off the loss mask
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from medix_ray.learner.packing import PackedRows, block_mask, dense_mask, pack_rows, plan_micro_batches
from medix_ray.trajectory import PolicyBatch


@dataclass(frozen=True)
class Layout:
    """How a batch is cut into micro-batches and laid out for the forward."""

    shared_prefix: bool = True
    max_tokens: int = 4096  # shared prefix: the token budget of one packed micro-batch
    micro_batch_size: int = 2  # per row: rows per micro-batch

    @classmethod
    def from_config(cls, cfg) -> Layout:
        """From a `LearnerConfig` (shared_prefix, max_tokens_per_micro_batch, micro_batch_size)."""
        return cls(cfg.shared_prefix, cfg.max_tokens_per_micro_batch, cfg.micro_batch_size)

    @classmethod
    def per_row(cls, micro_batch_size: int) -> Layout:
        return cls(shared_prefix=False, micro_batch_size=micro_batch_size)

    @classmethod
    def shared(cls, max_tokens: int) -> Layout:
        return cls(shared_prefix=True, max_tokens=max_tokens)

    def plan(self, batch: PolicyBatch) -> MicroPlan:
        """Returns this rank's micro-batches, as many on every data-parallel rank (ZeRO-3 gathers
        parameters in every forward, a collective): a rank with fewer splits its largest ones, then
        repeats its last one with no weight."""
        spans, over = self.spans(batch)
        target = _max_over_ranks(len(spans))
        while len(spans) < target:
            widest = max(range(len(spans)), key=lambda i: spans[i][1] - spans[i][0]) if spans else None
            if widest is None or spans[widest][1] - spans[widest][0] < 2:
                break
            a, b = spans[widest]
            spans[widest : widest + 1] = [(a, (a + b) // 2), ((a + b) // 2, b)]
        padding = target - len(spans)
        if padding and not spans:
            raise ValueError("this learner rank has no rows while another has some; shard batches evenly")
        return MicroPlan(spans + [spans[-1]] * padding, over, padding)

    def spans(self, batch: PolicyBatch) -> tuple[list[tuple[int, int]], int]:
        """Returns the row spans of the micro-batches and how many are over the token budget."""
        if not self.shared_prefix:
            if self.micro_batch_size < 1:
                raise ValueError(f"learner.micro_batch_size={self.micro_batch_size}: expected >= 1")
            step = self.micro_batch_size
            return [(i, min(i + step, batch.size)) for i in range(0, batch.size, step)], 0
        return plan_micro_batches(batch.prompt_lens, batch.attention_mask.sum(dim=1), batch.group_ids, self.max_tokens)


@dataclass
class MicroPlan:
    """The micro-batches of one rank's share of a batch."""

    spans: list[tuple[int, int]]  # row spans [start, stop), in order
    over_budget: int  # spans over the token budget (a single row longer than it)
    padding: int  # trailing spans that only keep the ranks in step: computed, given no weight

    def is_padding(self, index: int) -> bool:
        return index >= len(self.spans) - self.padding


def _max_over_ranks(count: int) -> int:
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return count
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([count], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Returns the Hugging Face model inside a DeepSpeed engine (or the model itself)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def attention_backend(model: torch.nn.Module, shared_prefix: bool) -> str:
    """Returns the name of the attention path a forward takes (reported in the step metrics)."""
    impl = getattr(unwrap(model).config, "_attn_implementation", None) or "eager"
    if not shared_prefix:
        return f"{impl}/per-row"
    if impl == "flex_attention":
        return "flex/block-mask"
    if impl in ("sdpa", "eager"):
        return f"{impl}/dense-block-mask"
    raise ValueError(
        f"learner.shared_prefix needs sdpa, eager or flex_attention attention; the policy uses {impl!r} "
        "(set learner.attention, or learner.shared_prefix=false)"
    )


def _device(model: torch.nn.Module) -> torch.device:
    return next(unwrap(model).parameters()).device


def rope_index(model: torch.nn.Module):
    """Returns `index(input_ids [n, T], grid, attention_mask) -> [3, n, T]`, the model's own 3-D (mrope)
    positions for Qwen-VL policies, or None for models with 1-D positions."""
    inner = unwrap(model)
    fn = getattr(getattr(inner, "model", None), "get_rope_index", None)
    if fn is None:
        return None
    image_token = inner.config.image_token_id

    def index(ids: torch.Tensor, grid: torch.Tensor | None, attention_mask: torch.Tensor | None = None):
        types = (ids == image_token).int()
        return fn(ids, mm_token_type_ids=types, image_grid_thw=grid, attention_mask=attention_mask)[0]

    return index


def _select_logprobs(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, temperature: float):
    """Returns log softmax(logits[rows] / temperature)[targets] (fp32 math), for logits `[K, V]`."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits[rows, targets] - torch.logsumexp(logits, dim=-1)[rows]


def token_logprobs_from_logits(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Returns log π(input_ids[:, t + 1] | ≤ t), `[N, T - 1]`, from logits `[N, T, V]` (fp32 math)."""
    n, t, v = logits.shape
    flat = logits[:, :-1].reshape(-1, v)
    rows = torch.arange(flat.shape[0], device=flat.device)
    return _select_logprobs(flat, rows, input_ids[:, 1:].reshape(-1), temperature).reshape(n, t - 1)


def pack(model: torch.nn.Module, batch: PolicyBatch) -> PackedRows:
    """Returns the batch's rows in the shared-prefix layout, with the model's mrope positions if it has them."""
    if batch.prompt_lens is None or batch.group_ids is None:
        raise ValueError("the batch has no prompt_lens/group_ids (build it with build_batch or build_sample_batch)")
    index = rope_index(model)
    prompt_index = None if index is None else (lambda ids, grid: index(ids[None], grid)[:, 0])
    return pack_rows(
        batch.input_ids,
        batch.attention_mask,
        batch.prompt_lens,
        batch.group_ids,
        images=batch.row_images if batch.pixel_values is not None else None,
        rope_index=prompt_index,
    )


def shared_prefix_logprobs(model: torch.nn.Module, batch: PolicyBatch, temperature: float = 1.0) -> torch.Tensor:
    """Returns the batch's token log-probs `[N, T - 1]` from one shared-prefix forward (with gradients if enabled)."""
    packed = pack(model, batch)
    device = _device(model)
    group, segment = packed.group.to(device), packed.segment.to(device)
    if attention_backend(model, True).startswith("flex"):
        mask = block_mask(group, segment)
    else:
        mask = dense_mask(group, segment)
        if getattr(unwrap(model).config, "_attn_implementation", "eager") == "eager":
            mask = torch.zeros(mask.shape, dtype=unwrap(model).dtype, device=device).masked_fill(
                ~mask, torch.finfo(unwrap(model).dtype).min
            )
    inputs = {"input_ids": packed.input_ids.to(device), "position_ids": packed.position_ids.to(device)}
    if packed.pixel_values is not None:
        inputs["pixel_values"] = packed.pixel_values.to(device)
        inputs["image_grid_thw"] = packed.image_grid_thw.to(device)
    logits = model(**inputs, attention_mask=mask, use_cache=False, logits_to_keep=packed.keep.to(device)).logits[0]
    lp = _select_logprobs(logits, packed.source.to(device), packed.targets.to(device), temperature)
    out = torch.zeros((packed.rows, packed.width - 1), dtype=lp.dtype, device=device)
    out = out.index_put((packed.row.to(device), packed.col.to(device)), lp)
    return out * batch.loss_mask.to(device)


def per_row_logprobs(model: torch.nn.Module, batch: PolicyBatch, temperature: float = 1.0) -> torch.Tensor:
    """Returns the batch's token log-probs `[N, T - 1]` in one right-padded forward (with gradients if enabled)."""
    device = _device(model)
    inputs = {k: v.to(device) for k, v in batch.model_inputs().items()}
    index = rope_index(model)
    if index is not None:
        # Qwen-VL: the model's own 3-D positions of each row (its forward infers 1-D ones without mm_token_type_ids)
        inputs["position_ids"] = index(batch.input_ids, batch.image_grid_thw, batch.attention_mask).to(device)
    logits = model(**inputs, use_cache=False).logits
    return token_logprobs_from_logits(logits, inputs["input_ids"], temperature) * batch.loss_mask.to(device)


def forward_logprobs(
    model: torch.nn.Module, batch: PolicyBatch, temperature: float = 1.0, shared_prefix: bool = False
) -> torch.Tensor:
    """Returns one micro-batch's token log-probs `[N, T - 1]`, in the shared-prefix or the per-row layout."""
    if shared_prefix:
        return shared_prefix_logprobs(model, batch, temperature)
    return per_row_logprobs(model, batch, temperature)


@torch.no_grad()
def batch_logprobs(
    model: torch.nn.Module, batch: PolicyBatch, layout: Layout, temperature: float = 1.0
) -> torch.Tensor:
    """Returns token log-probs `[N, T - 1]` computed in micro-batches (bounded memory), zero off the loss mask."""
    out = torch.zeros_like(batch.loss_mask)
    plan = layout.plan(batch)
    for index, (start, stop) in enumerate(plan.spans):
        micro = batch.select(start, stop)
        logp = forward_logprobs(model, micro, temperature, layout.shared_prefix)
        if not plan.is_padding(index):
            out[start:stop, : logp.shape[1]] = logp.cpu()
    return out
