"""The learner group through Ray Train: 2 CPU workers, DeepSpeed ZeRO-2, commanded by the controller."""

import pytest
import torch

from medix_ray.config import AlgorithmConfig, LearnerConfig
from medix_ray.learner.group import LearnerError, LearnerGroup
from medix_ray.learner.logprobs import Layout, batch_logprobs
from medix_ray.trajectory import UpdateStats

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_path):
    """A tiny random Llama with SmolLM2's tokenizer (head_dim 32, as vLLM's CPU attention needs)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny_lm")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(smollm2_path).save_pretrained(path)
    return str(path)


def _batch(model_dir, n=8):
    from transformers import AutoModelForCausalLM

    from medix_ray.learner.batch import build_batch

    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(1, 64, (int(k),), generator=g).tolist() for k in torch.randint(2, 6, (n,), generator=g)]
    responses = [torch.randint(1, 64, (int(k),), generator=g).tolist() for k in torch.randint(1, 6, (n,), generator=g)]
    batch = build_batch(prompts, responses, [1.0] * n, pad_id=0)
    reference = batch_logprobs(AutoModelForCausalLM.from_pretrained(model_dir).eval(), batch, Layout.per_row(8))
    return batch, reference


@pytest.mark.parametrize("stage", [3, 2])
def test_group_logprobs_update_checkpoint_and_resume(ray_cluster, tiny_model_dir, tmp_path, stage):
    cfg = LearnerConfig(
        num_workers=2, zero_stage=stage, lr=1e-2, micro_batch_size=1, mini_batches_per_step=2, cpus_per_worker=1
    )
    batch, reference = _batch(tiny_model_dir)
    group = LearnerGroup(tiny_model_dir, cfg, AlgorithmConfig(), storage_path=str(tmp_path), name="g1")
    assert group.start() == {"step": 0}
    try:
        old = group.compute_logprobs(batch)
        assert torch.allclose(old, reference, atol=1e-5)  # the ranks' shards come back in row order
        batch.old_logp = old
        stats = group.update(batch)
        assert len(stats) == 2 and all(isinstance(s, UpdateStats) and s.tokens > 0 for s in stats)
        new = group.compute_logprobs(batch)
        assert (new * batch.loss_mask).sum() > (old * batch.loss_mask).sum()  # positive advantages rise
        group.save_checkpoint(step=1)
        weights = group.state_dict()
        assert weights["model.embed_tokens.weight"].shape == (49152, 64)
        with pytest.raises(ValueError, match="cannot be split"):
            group.update(batch.select(0, 7))
    finally:
        group.shutdown()
    resumed = LearnerGroup(tiny_model_dir, cfg, AlgorithmConfig(), storage_path=str(tmp_path), name="g1")
    assert resumed.start()["step"] == 1
    try:
        assert torch.allclose(resumed.compute_logprobs(batch), new, atol=1e-5)
    finally:
        resumed.shutdown()

    # The checkpoint exports to a Hugging Face folder with the trained weights.
    from transformers import AutoModelForCausalLM

    from medix_ray.learner.export import export_checkpoint

    out = export_checkpoint(group.latest_checkpoint(), tmp_path / "hf", dtype=torch.float32)
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.allclose(batch_logprobs(exported, batch, Layout.per_row(8)), new, atol=1e-4)
    pytest.exported_dir = str(out)  # reused by the vLLM test below


def test_a_failing_rank_is_reported_with_its_call(ray_cluster, tiny_model_dir, tmp_path):
    cfg = LearnerConfig(num_workers=2, zero_stage=2, micro_batch_size=1, mini_batches_per_step=1, cpus_per_worker=1)
    batch, _ = _batch(tiny_model_dir, n=2)  # kl_coef is 0: no reference model, so ref log-probs fail on every rank
    group = LearnerGroup(tiny_model_dir, cfg, AlgorithmConfig(), storage_path=str(tmp_path), name="g2")
    group.start()
    try:
        with pytest.raises(
            LearnerError,
            match=r"rank 0 failed on 'ComputeRefLogprobs': ValueError: reference log-probs need algorithm.kl_coef",
        ):
            group.compute_ref_logprobs(batch)
        # Calls are typed objects: anything else is refused before it is posted, and a function reaches every
        # rank's LearnerWorker (benchmarks, tools).
        with pytest.raises(TypeError, match=r"learner calls are LearnerCall objects; got str"):
            group._run(["objstore_push"] * 2)
        assert group.foreach_worker(lambda worker, p: (worker.rank, p, worker.reference), [7, 8]) == [
            (0, 7, None),
            (1, 8, None),
        ]
    finally:
        group.shutdown()


def test_exported_checkpoint_generates_in_vllm():
    from medix_ray.config import RolloutConfig
    from medix_ray.data.schema import Sample
    from medix_ray.rollout.vllm_engine import VLLMGenerator

    path = getattr(pytest, "exported_dir", None)
    if path is None:
        pytest.fail("the export test did not run first")
    gen = VLLMGenerator(path, RolloutConfig(n=1, max_tokens=6, max_model_len=512, gpu_memory_utilization=0.3))
    try:
        (out,) = gen.generate(
            [Sample("x", "Which nerve supplies the diaphragm?", "<OTHER> Phrenic nerve")], temperature=0.0
        )
        assert out.response_tokens[0] > 0
    finally:
        gen.llm.llm_engine.engine_core.shutdown()


def test_reference_logprobs_stay_at_the_base_policy(ray_cluster, tiny_model_dir, tmp_path):
    cfg = LearnerConfig(
        num_workers=2, zero_stage=2, lr=1e-2, micro_batch_size=2, mini_batches_per_step=1, cpus_per_worker=1
    )
    batch, reference = _batch(tiny_model_dir, n=4)
    group = LearnerGroup(tiny_model_dir, cfg, AlgorithmConfig(kl_coef=0.1), storage_path=str(tmp_path), name="g3")
    group.start()
    try:
        batch.old_logp = group.compute_logprobs(batch)
        batch.ref_logp = group.compute_ref_logprobs(batch)
        assert torch.allclose(batch.ref_logp, reference, atol=1e-5)
        stats = group.update(batch)
        assert stats[0].kl == pytest.approx(0.0, abs=1e-6)  # first step: policy == reference
        assert torch.allclose(group.compute_ref_logprobs(batch), reference, atol=1e-5)
        assert not torch.allclose(group.compute_logprobs(batch), reference, atol=1e-4)
    finally:
        group.shutdown()
