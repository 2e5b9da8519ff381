import math

import pytest
import torch

from medix_ray.algorithms.losses import aggregate_loss, gspo_token_loss, kl_penalty, ppo_clip_loss


def _one(log_ratio, adv, **kw):
    logp = torch.tensor([[log_ratio]])
    out = ppo_clip_loss(logp, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1), **kw)
    return out.token_loss.item(), out.clip_fraction.item()


def test_ppo_clip_cases():
    assert _one(0.0, 1.0) == pytest.approx((-1.0, 0.0))
    assert _one(0.5, 1.0) == pytest.approx((-1.28, 1.0))  # clip-higher bound 1 + 0.28
    assert _one(math.log(0.5), -1.0) == pytest.approx((0.8, 1.0))  # lower bound 1 - 0.2
    assert _one(math.log(0.5), 1.0)[0] == pytest.approx(-0.5)  # clipping never helps the objective
    assert _one(2.0, -1.0)[0] == pytest.approx(3.0)  # dual clip caps the negative-advantage loss
    assert _one(2.0, -1.0, dual_clip=None)[0] == pytest.approx(math.exp(2.0))
    assert _one(50.0, 1.0)[0] == pytest.approx(-1.28)  # far outside: clamped, still clipped


def test_masked_tokens_contribute_nothing():
    logp = torch.tensor([[0.3, 9.0], [0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # second row fully masked
    out = ppo_clip_loss(logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), mask)
    assert out.token_loss[0, 1].item() == 0.0 and out.token_loss[1].abs().sum().item() == 0.0
    out.token_loss.sum().backward()
    assert logp.grad[0, 1].item() == 0.0 and logp.grad[1].abs().sum().item() == 0.0
    assert out.clip_fraction.item() == 1.0  # 1 of 1 valid token was clipped (ratio e^0.3 > 1.28)


def test_aggregation_modes():
    loss = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate_loss(loss, mask, "token_mean").item() == pytest.approx(2.0)
    assert aggregate_loss(loss, mask, "seq_mean_token_mean").item() == pytest.approx(2.25)
    assert aggregate_loss(loss, mask, "seq_mean_token_sum_norm", norm_length=4).item() == pytest.approx(0.75)
    single = torch.tensor([[5.0]])
    assert aggregate_loss(single, torch.ones(1, 1), "token_mean").item() == 5.0
    with pytest.raises(ValueError, match="norm_length"):
        aggregate_loss(loss, mask, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_loss(loss, mask, "sum")


def _batch(seed=0, n=6, length=5):
    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(n, length, generator=g) * 0.1 - 1.0
    old = logp + torch.randn(n, length, generator=g) * 0.2
    adv = torch.randn(n, generator=g)
    lengths = torch.tensor([5, 3, 1, 4, 2, 5])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    return logp, old, adv, mask


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batching_and_data_parallel_give_the_same_gradient(mode):
    logp, old, adv, mask = _batch()
    kw = {"norm_length": 5} if mode == "seq_mean_token_sum_norm" else {}

    def grad_of(parts, dp_size=1):
        leaf = logp.clone().requires_grad_(True)
        total_tokens, total_seqs = mask.sum().item(), float((mask.sum(1) > 0).sum())
        for idx in parts:
            out = ppo_clip_loss(leaf[idx], old[idx], adv[idx], mask[idx])
            share = aggregate_loss(
                out.token_loss,
                mask[idx],
                mode,
                global_tokens=total_tokens,
                global_seqs=total_seqs,
                dp_size=dp_size,
                **kw,
            )
            share.backward()
        return leaf.grad

    full = grad_of([slice(0, 6)])
    micro1 = grad_of([slice(i, i + 1) for i in range(6)])
    micro2 = grad_of([slice(0, 2), slice(2, 4), slice(4, 6)])
    assert torch.allclose(full, micro1, atol=1e-6) and torch.allclose(full, micro2, atol=1e-6)
    # Two data-parallel ranks, each with half the batch; DDP averages their gradients.
    rank0, rank1 = grad_of([slice(0, 3)], dp_size=2), grad_of([slice(3, 6)], dp_size=2)
    assert torch.allclose(full, (rank0 + rank1) / 2, atol=1e-6)


def test_kl_estimators():
    logp, ref = torch.tensor([0.0]), torch.tensor([math.log(0.5)])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([30.0]), "k3").item() == 10.0  # clamped
    assert kl_penalty(logp, logp, "k3").item() == 0.0
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(logp, ref, "k4")


def test_gspo_token_value_is_the_sequence_ratio_with_per_token_gradients():
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0]])
    out = gspo_token_loss(logp, old, torch.tensor([2.0]), torch.ones(1, 2))
    assert out.token_loss.flatten().tolist() == pytest.approx([-2.0, -2.0])
    out.token_loss.sum().backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-2.0, -2.0])
    far = gspo_token_loss(torch.tensor([[0.1, 0.3]]), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    assert far.token_loss.flatten().tolist() == pytest.approx([-1.0004, -1.0004], abs=1e-6)  # s = e^0.2, clipped
    assert far.clip_fraction.item() == 1.0


def test_gspo_token_dual_clip_bounds_negative_advantages_by_hand():
    # two tokens with log-ratio 2 each: s = e^2 = 7.389; A = -1, so -A·s = 7.389 > -A·clip(s) = 1.0004
    logp = torch.tensor([[2.0, 2.0]], requires_grad=True)
    old = torch.zeros(1, 2)
    out = gspo_token_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 2), dual_clip=3.0)
    assert out.token_loss.flatten().tolist() == pytest.approx([3.0, 3.0])  # min(7.389, -A·3)
    out.token_loss.sum().backward()
    assert logp.grad.flatten().tolist() == [0.0, 0.0]  # the bound is a constant: no gradient
    plain = gspo_token_loss(logp.detach().requires_grad_(), old, torch.tensor([-1.0]), torch.ones(1, 2), dual_clip=None)
    assert plain.token_loss.flatten().tolist() == pytest.approx([math.exp(2.0)] * 2)
    # a positive advantage is never dual-clipped: A = 1, s = e^2 clipped to 1.0004 -> -1.0004
    pos = gspo_token_loss(torch.tensor([[2.0, 2.0]]), old, torch.tensor([1.0]), torch.ones(1, 2), dual_clip=3.0)
    assert pos.token_loss.flatten().tolist() == pytest.approx([-1.0004, -1.0004], abs=1e-6)
