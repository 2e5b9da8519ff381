"""The update step: it raises the log-probs of positively-advantaged responses, and it does not depend on the
micro-batch size or the number of data-parallel workers."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medix_ray.config import AlgorithmConfig
from medix_ray.learner.batch import build_batch
from medix_ray.learner.logprobs import Layout, batch_logprobs
from medix_ray.learner.update import TorchEngine, minibatch_update
from tests.learner.engines import GradientOnlyEngine


def tiny_lm(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg)


def fixed_batch(model, advantages=(1.0, -0.5, 0.8, -1.2, 0.3, 0.6)):
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 64, (int(n),), generator=g).tolist() for n in [3, 5, 2, 4, 6, 3]]
    responses = [torch.randint(1, 64, (int(n),), generator=g).tolist() for n in [4, 1, 6, 2, 3, 5]]
    batch = build_batch(prompts, responses, list(advantages), pad_id=0)
    batch.old_logp = batch_logprobs(model.eval(), batch, Layout.per_row(6))
    model.train()
    return batch


def test_positive_advantages_raise_the_responses_logprobs():
    model = tiny_lm()
    batch = fixed_batch(model, advantages=[1.0] * 6)
    before = (batch.old_logp * batch.loss_mask).sum()
    engine = TorchEngine(model, lr=1e-2)
    stats = minibatch_update(engine, batch, AlgorithmConfig(), layout=Layout.per_row(2))
    after = (batch_logprobs(model.eval(), batch, Layout.per_row(6)) * batch.loss_mask).sum()
    assert after > before
    assert stats.tokens == batch.response_tokens and stats.loss < 0 and stats.grad_norm > 0
    assert stats.ratio_mean == pytest.approx(1.0, abs=1e-5)  # first pass: the policy is still the old one


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batch_size_does_not_change_the_gradient(mode):
    # Gradients, not AdamW's update: Adam divides near-zero gradients and would amplify float noise.
    algo = AlgorithmConfig(loss_agg=mode)
    grads = []
    for micro in (1, 2, 6):
        model = tiny_lm()
        minibatch_update(
            GradientOnlyEngine(model),
            fixed_batch(model),
            algo,
            layout=Layout.per_row(micro),
            norm_length=8,
        )
        grads.append(_grads(model))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-7, rtol=1e-4)
    assert torch.allclose(grads[0], grads[2], atol=1e-7, rtol=1e-4)


def test_one_step_moves_the_parameters():
    model = tiny_lm()
    minibatch_update(TorchEngine(model, lr=1e-3), fixed_batch(model), AlgorithmConfig(), layout=Layout.per_row(2))
    moved = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not torch.allclose(moved, torch.cat([p.detach().flatten() for p in tiny_lm().parameters()]))


def _dp_worker(rank, world, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = tiny_lm()
    batch = fixed_batch(model)
    half = batch.select(rank * 3, rank * 3 + 3)
    ddp = torch.nn.parallel.DistributedDataParallel(model)

    class DDPEngine(GradientOnlyEngine):
        def __init__(self):
            super().__init__(model)
            self.module = ddp

    minibatch_update(DDPEngine(), half, AlgorithmConfig(), layout=Layout.per_row(1))
    if rank == 0:
        torch.save(_grads(model), out_path)  # DDP has averaged the two ranks' gradients
    dist.destroy_process_group()


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_two_data_parallel_workers_give_the_single_process_gradient(tmp_path):
    model = tiny_lm()
    batch = fixed_batch(model)
    minibatch_update(GradientOnlyEngine(model), batch, AlgorithmConfig(), layout=Layout.per_row(3))
    single = _grads(model)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dp_worker, args=(2, port, str(tmp_path / "p.pt")), nprocs=2, join=True)
    assert torch.allclose(single, torch.load(tmp_path / "p.pt"), atol=1e-7, rtol=1e-4)


def test_update_requires_old_logprobs():
    model = tiny_lm()
    batch = build_batch([[1]], [[2, 3]], [1.0], pad_id=0)
    with pytest.raises(ValueError, match="no old_logp"):
        minibatch_update(TorchEngine(model), batch, AlgorithmConfig(), layout=Layout.per_row(1))
    batch.old_logp = torch.zeros_like(batch.loss_mask)
    with pytest.raises(ValueError, match="kl_coef"):
        minibatch_update(TorchEngine(model), batch, AlgorithmConfig(kl_coef=0.1), layout=Layout.per_row(1))


def test_on_policy_update_uses_the_current_logprobs_as_old():
    """A single mini-batch right after the rollout: no old_logp needed, same gradient as passing them."""
    grads = []
    for on_policy in (False, True):
        model = tiny_lm()
        batch = fixed_batch(model)
        if on_policy:
            batch.old_logp = None
        minibatch_update(
            GradientOnlyEngine(model),
            batch,
            AlgorithmConfig(),
            layout=Layout.per_row(2),
            on_policy=on_policy,
        )
        grads.append(_grads(model))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-7, rtol=1e-4)


def test_kl_term_pulls_the_policy_toward_the_reference():
    model = tiny_lm()
    batch = fixed_batch(model, advantages=[0.0] * 6)  # no policy-gradient signal: only the KL acts
    batch.ref_logp = batch.old_logp - 0.5  # a reference that gives these tokens less probability
    stats = minibatch_update(TorchEngine(model, lr=1e-2), batch, AlgorithmConfig(kl_coef=1.0), layout=Layout.per_row(3))
    assert stats.kl > 0
    after = batch_logprobs(model.eval(), batch, Layout.per_row(6))
    assert (after * batch.loss_mask).sum() < (batch.old_logp * batch.loss_mask).sum()


def test_unsupported_learner_settings_are_rejected_by_name():
    from medix_ray.config import LearnerConfig
    from medix_ray.learner.engine import check_supported

    with pytest.raises(ValueError, match="learner.lora_rank=8: LoRA is not supported yet"):
        check_supported(LearnerConfig(lora_rank=8))
    with pytest.raises(ValueError, match="learner.zero_stage=1"):
        check_supported(LearnerConfig(zero_stage=1))


def test_freeze_vision_tower_stops_only_vision_gradients(tiny_vl_path):
    from transformers import AutoModelForImageTextToText

    from medix_ray.learner.engine import freeze_vision_tower

    model = AutoModelForImageTextToText.from_pretrained(tiny_vl_path, dtype=torch.float32)
    frozen = freeze_vision_tower(model)
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    assert frozen == vision > 0
    assert all(p.requires_grad for n, p in model.named_parameters() if ".visual." not in f".{n}")
    with pytest.raises(ValueError, match="no vision tower"):
        freeze_vision_tower(tiny_lm())


def _behaviour_grads(behaviour_shift, cap=2.0, on_policy=False):
    """Gradients of one update whose behaviour log-probs are the old ones shifted by `behaviour_shift`
    (None: no behaviour policy, the synchronous loss)."""
    model = tiny_lm()
    batch = fixed_batch(model)
    if behaviour_shift is not None:
        batch.behaviour_logp = (batch.old_logp + behaviour_shift) * batch.loss_mask
    if on_policy:
        batch.old_logp = None
    stats = minibatch_update(
        GradientOnlyEngine(model),
        batch,
        AlgorithmConfig(tis_cap=cap),
        layout=Layout.per_row(3),
        on_policy=on_policy,
    )
    return _grads(model), stats


@pytest.mark.parametrize("on_policy", [False, True])
def test_truncated_importance_weight_corrects_for_the_behaviour_policy(on_policy):
    plain, plain_stats = _behaviour_grads(None, on_policy=on_policy)
    assert plain_stats.is_weight_mean is None and plain_stats.is_truncated_fraction is None
    # The behaviour policy equals the old one: every weight is 1, the update is the synchronous one.
    same, stats = _behaviour_grads(0.0, on_policy=on_policy)
    assert torch.allclose(same, plain, atol=1e-7, rtol=1e-5)
    assert stats.is_weight_mean == pytest.approx(1.0) and stats.is_truncated_fraction == 0.0
    # Sampled by a policy that gave the tokens e^-0.5 of the old probability: weight e^0.5, under the cap.
    lower, stats = _behaviour_grads(-0.5, on_policy=on_policy)
    assert torch.allclose(lower, plain * torch.exp(torch.tensor(0.5)), atol=1e-6, rtol=1e-4)
    assert stats.is_weight_mean == pytest.approx(float(torch.exp(torch.tensor(0.5))), rel=1e-5)
    # Far less likely under the behaviour policy: the weight is truncated at the cap, every token counted.
    capped, stats = _behaviour_grads(-5.0, cap=2.0, on_policy=on_policy)
    assert torch.allclose(capped, plain * 2.0, atol=1e-6, rtol=1e-4)
    assert stats.is_truncated_fraction == 1.0 and stats.is_weight_mean == pytest.approx(2.0)


def test_the_cpu_optimizer_is_torchs_fused_adamw_and_steps_like_the_per_op_loop():
    from medix_ray.learner.update import adamw

    torch.manual_seed(0)
    weights = [torch.randn(300, 7), torch.randn(11)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(3)]
    params = {}
    for fused in (True, False):
        ps = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = adamw(ps, 1e-2, (0.9, 0.999), 0.01) if fused else torch.optim.AdamW(ps, 1e-2, weight_decay=0.01)
        assert opt.defaults["fused"] is (True if fused else None)
        for step in grads:
            for p, g in zip(ps, step, strict=True):
                p.grad = g.clone()
            opt.step()
        params[fused] = torch.cat([p.detach().flatten() for p in ps])
    assert not torch.equal(params[True], torch.cat([w.flatten() for w in weights]))  # it moved
    torch.testing.assert_close(params[True], params[False], rtol=1e-6, atol=1e-6)
