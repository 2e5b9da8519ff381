"""The learner batch is built from the rollout engine's own prompt token ids (no second rendering), and those
ids agree with what rendering and tokenising the sample again would give."""

import gc

import pytest
import torch

from medix_ray.data.images import PixelBounds, load_fitted
from medix_ray.data.schema import ImageRef, Sample
from medix_ray.learner.batch import build_rollout_batch, build_sample_batch, process_images


def _samples(make_png):
    return [
        Sample("red", "What colour is the lesion?", "<CLINICAL_PHOTOGRAPHY> Red", (ImageRef(data=make_png()),)),
        Sample(
            "two",
            "Compare the two views.",
            "<X_RAY> Same",
            (ImageRef(data=make_png((0, 0, 200), (56, 112))), ImageRef(data=make_png((0, 200, 0), (112, 56)))),
        ),
        Sample("txt", "Name the antidote for opioid overdose.", "<OTHER> Naloxone"),
    ]


def _replica_images(rows, renderer):
    """What a rollout replica sends with each rollout: the sample's images, decoded and processed once."""
    return [process_images(load_fitted(s, PixelBounds()), renderer) if s.images else None for s in rows]


def _rows(samples, n=2):
    rows = [s for s in samples for _ in range(n)]
    responses = [[11 + i, 12, 13 + i % 3][: 1 + i % 3] for i in range(len(rows))]
    return rows, responses, torch.linspace(-1, 1, len(rows))


def test_rollout_batch_equals_the_rendered_batch_for_a_vlm(tiny_vl_path, make_png):
    from medix_ray.rollout.vllm_engine import load_prompt_renderer

    renderer = load_prompt_renderer(tiny_vl_path)
    rows, responses, adv = _rows(_samples(make_png))
    rendered = build_sample_batch(rows, responses, adv, renderer)
    prompt_ids = [rendered.input_ids[i, : int(rendered.prompt_lens[i])].tolist() for i in range(rendered.size)]
    ids = [s.id for s in rows]
    built = build_rollout_batch(ids, prompt_ids, responses, adv, renderer, _replica_images(rows, renderer))
    for name in ("input_ids", "attention_mask", "loss_mask", "pixel_values", "image_grid_thw", "group_ids"):
        assert torch.equal(getattr(built, name), getattr(rendered, name)), name
    assert built.images_per_row == rendered.images_per_row == [1, 1, 2, 2, 0, 0]
    assert built.group_ids.tolist() == [0, 0, 1, 1, 2, 2]


def test_rollout_prompt_with_the_wrong_image_tokens_is_refused(tiny_vl_path, make_png):
    from medix_ray.rollout.vllm_engine import load_prompt_renderer

    renderer = load_prompt_renderer(tiny_vl_path)
    rows, responses, adv = _rows(_samples(make_png)[:1], n=1)
    rendered = build_sample_batch(rows, responses, adv, renderer)
    ids = rendered.input_ids[0, : int(rendered.prompt_lens[0])].tolist()
    image_token = renderer.tokenizer.convert_tokens_to_ids(renderer.image_token)
    ids.remove(image_token)
    with pytest.raises(ValueError, match="sample 'red': the rollout prompt holds"):
        build_rollout_batch([rows[0].id], [ids], responses, adv, renderer, _replica_images(rows, renderer))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vllm_prompt_token_ids_agree_with_the_learner_rendering(smollm2_path, tiny_vl_path, make_png):
    """The replica's prompt ids (vllm_prompt -> engine, as deployments/rollout_app.py) equal a second render."""
    from vllm import SamplingParams

    from medix_ray.config import RolloutConfig
    from medix_ray.rollout.vllm_engine import VLLMGenerator, vllm_prompt

    cfg = RolloutConfig(
        n=1, max_tokens=2, max_model_len=1024, gpu_memory_utilization=0.3, enforce_eager=True, max_images_per_prompt=2
    )
    samples = _samples(make_png)
    for path, chosen in ((smollm2_path, samples[2:]), (tiny_vl_path, samples)):
        gen = VLLMGenerator(path, cfg)
        try:
            prompts = [vllm_prompt(s, gen.renderer, gen.format, gen.bounds) for s in chosen]
            outs = gen.llm.generate(prompts, SamplingParams(max_tokens=2))
            rendered = build_sample_batch(chosen, [[5]] * len(chosen), [0.0] * len(chosen), gen.renderer, gen.format)
            for i, out in enumerate(outs):
                assert list(out.prompt_token_ids) == rendered.input_ids[i, : int(rendered.prompt_lens[i])].tolist()
            built = build_rollout_batch(
                [s.id for s in chosen],
                [o.prompt_token_ids for o in outs],
                [[5]] * len(chosen),
                [0.0] * len(chosen),
                gen.renderer,
                _replica_images(chosen, gen.renderer) if gen.multimodal else None,
            )
            assert torch.equal(built.input_ids, rendered.input_ids)
            if rendered.pixel_values is not None:
                assert torch.equal(built.pixel_values, rendered.pixel_values)
        finally:
            gen.llm.llm_engine.engine_core.shutdown()
            del gen
            gc.collect()
