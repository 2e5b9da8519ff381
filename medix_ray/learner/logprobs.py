"""Token log-probabilities of a batch under a causal LM or Qwen-VL policy."""

from __future__ import annotations

import torch

from medix_ray.learner.batch import PolicyBatch


def token_logprobs_from_logits(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Returns log π(input_ids[:, t + 1] | ≤ t), `[N, T - 1]`, from logits `[N, T, V]` (fp32 math)."""
    logits = logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1:].unsqueeze(-1)
    return logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def forward_logprobs(model: torch.nn.Module, batch: PolicyBatch, temperature: float = 1.0) -> torch.Tensor:
    """Returns the batch's token log-probs `[N, T - 1]` in one forward (with gradients if enabled)."""
    logits = model(**batch.model_inputs(), use_cache=False).logits
    return token_logprobs_from_logits(logits, batch.input_ids, temperature) * batch.loss_mask


@torch.no_grad()
def batch_logprobs(
    model: torch.nn.Module, batch: PolicyBatch, micro_batch_size: int, temperature: float = 1.0
) -> torch.Tensor:
    """Returns token log-probs `[N, T - 1]` computed in micro-batches (bounded memory), zero off the loss mask."""
    out = torch.zeros_like(batch.loss_mask)
    for start in range(0, batch.size, micro_batch_size):
        micro = batch.select(start, min(start + micro_batch_size, batch.size))
        width = micro.loss_mask.shape[1]
        out[start : start + micro.size, :width] = forward_logprobs(model, micro, temperature)
    return out
