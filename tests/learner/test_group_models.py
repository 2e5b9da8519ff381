"""The learner group on the offline models: SmolLM2-135M (text) and tiny Qwen2.5-VL with bundled images."""

import pytest

from medix_ray.config import AlgorithmConfig, LearnerConfig
from medix_ray.data.readers import read_samples, take_samples
from medix_ray.learner.batch import build_sample_batch
from medix_ray.learner.group import LearnerGroup
from medix_ray.rollout.vllm_engine import load_prompt_renderer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize(("model", "text_only"), [("smollm2-135m-instruct", True), ("tiny-qwen2.5-vl", False)])
def test_positive_advantages_raise_logprobs_on_offline_models(ray_cluster, model, text_only, tmp_path):
    from medix_ray.models import resolve_model

    path = resolve_model(model)
    renderer = load_prompt_renderer(path)
    ds, report = read_samples("bundled", split="test", text_only=text_only)
    samples = [s for s in take_samples(ds, report) if bool(s.images) != text_only][:4]
    assert len(samples) == 4
    tok = renderer.tokenizer if hasattr(renderer, "tokenizer") else renderer
    responses = [
        tok(f"<OTHER><think>r</think><answer>{s.answer}</answer>", add_special_tokens=False)["input_ids"]
        for s in samples
    ]
    batch = build_sample_batch(samples, responses, [1.0] * 4, renderer)
    if not text_only:
        assert batch.pixel_values is not None and batch.images_per_row == [1, 1, 1, 1]
    cfg = LearnerConfig(
        num_workers=2, zero_stage=2, lr=1e-4, micro_batch_size=1, mini_batches_per_step=1, cpus_per_worker=1
    )
    group = LearnerGroup(path, cfg, AlgorithmConfig(), storage_path=str(tmp_path), name="m")
    group.start()
    try:
        batch.old_logp = group.compute_logprobs(batch)
        group.update(batch)
        after = group.compute_logprobs(batch)
    finally:
        group.shutdown()
    mask = batch.loss_mask
    assert (after * mask).sum() > (batch.old_logp * mask).sum()
