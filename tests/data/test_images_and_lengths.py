"""Image fitting (data.min_pixels / max_pixels) is the same in rollout, learner and evaluation, and
overlong prompts (data.max_prompt_length) are left out and counted."""

import io

import numpy as np
import pytest
from PIL import Image

from medix_ray.data.images import PixelBounds, fit_pixels, fitted_size
from medix_ray.data.output_format import OutputFormat
from medix_ray.data.schema import ImageRef, Sample

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(
    ("size", "bounds", "expected"),
    [
        ((64, 64), PixelBounds(3136, 262144), (64, 64)),  # inside: untouched
        ((2048, 1024), PixelBounds(3136, 262144), (724, 362)),  # 2.1 MP -> 262,088 px, aspect kept
        ((20, 10), PixelBounds(3136, 262144), (80, 40)),  # 200 px -> 3,200 px >= min
        ((4096, 4096), PixelBounds(262144, 4194304), (2048, 2048)),  # the recipes' bounds
    ],
)
def test_fitted_size_keeps_the_aspect_ratio_within_bounds(size, bounds, expected):
    w, h = fitted_size(*size, bounds)
    assert (w, h) == expected
    assert bounds.min_pixels <= w * h <= bounds.max_pixels or (w, h) == size


def test_bad_bounds_name_the_keys():
    with pytest.raises(ValueError, match="data.min_pixels <= data.max_pixels"):
        PixelBounds(1000, 10)


def _png(size) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size", [(900, 500), (30, 20)], ids=["downscaled", "upscaled"])
def test_rollout_learner_and_eval_see_the_same_pixels(tiny_vl_path, size):
    from medix_ray.eval.generate import CandidateGenerator
    from medix_ray.learner.batch import build_sample_batch
    from medix_ray.rollout.vllm_engine import load_prompt_renderer, vllm_prompt

    bounds = PixelBounds(3136, 40000)  # under the tiny processor's own cap (50,176 px)
    data = _png(size)
    sample = Sample("s", "Which lung?", "<X_RAY> Left lung", (ImageRef(data=data),))
    processor = load_prompt_renderer(tiny_vl_path)

    rollout_image = vllm_prompt(sample, processor, OutputFormat(), bounds)["multi_modal_data"]["image"]
    assert rollout_image.size == fitted_size(*size, bounds) != size

    # the evaluation's request builder, without starting its engine
    gen = CandidateGenerator.__new__(CandidateGenerator)
    gen.renderer, gen.tokenizer, gen.multimodal = processor, processor.tokenizer, True
    gen.system_prompt, gen.force_think, gen.max_model_len, gen.max_tokens = "", False, 4096, 8
    gen.pixel_bounds = bounds
    prompt, _ = gen._request({"id": "s", "question": "Which lung?", "image": data})
    eval_image = prompt["multi_modal_data"]["image"]
    assert np.array_equal(np.asarray(eval_image), np.asarray(rollout_image))

    batch = build_sample_batch([sample], [[1, 2]], [1.0], processor, OutputFormat(), bounds)
    expected = processor(text=["x"], images=[rollout_image], return_tensors="pt")
    assert batch.image_grid_thw.tolist() == expected["image_grid_thw"].tolist()
    assert np.array_equal(batch.pixel_values.numpy(), expected["pixel_values"].numpy())
    assert np.array_equal(np.asarray(fit_pixels(sample.load_images()[0], bounds)), np.asarray(rollout_image))


def test_prompt_length_counts_image_tokens(tiny_vl_path, make_png):
    from medix_ray.data.prompt_length import PromptLengthCheck

    text = Sample("t", "Which nerve?", "<OTHER> Phrenic")
    image = Sample("i", "Which nerve?", "<X_RAY> Phrenic", (ImageRef(data=make_png(size=(512, 512))),))
    # (the tiny processor itself caps images at 50,176 px; the hub Qwen-VL processors at 12.8 MP)
    small = PromptLengthCheck(tiny_vl_path, 10_000, bounds=PixelBounds(3136, 12544))
    large = PromptLengthCheck(tiny_vl_path, 10_000, bounds=PixelBounds(3136, 50176))
    assert small.length(image) > small.length(text)
    assert large.length(image) > small.length(image)  # more pixels, more image tokens


def test_overlong_prompts_are_excluded_and_counted(ray_cluster):
    from medix_ray.config import load_config
    from medix_ray.data.prompt_length import PromptLengthCheck
    from medix_ray.data.readers import read_samples, read_samples_from_config, take_samples

    cfg = load_config("configs/tiny_cpu.yaml")
    everything = take_samples(*read_samples("bundled", split="test", text_only=True))
    lengths = {s.id: PromptLengthCheck.from_config(cfg).length(s) for s in everything}
    limit = int(np.median(list(lengths.values())))
    cfg.data.max_prompt_length = limit
    ds, report = read_samples_from_config(cfg.data, "test", PromptLengthCheck.from_config(cfg))
    kept = take_samples(ds, report)
    too_long = {i for i, n in lengths.items() if n > limit}
    assert 0 < len(too_long) < len(everything)
    assert {s.id for s in kept} == set(lengths) - too_long
    summary = report.summary()
    assert summary["excluded_reasons"]["prompt_too_long"] == len(too_long)
    assert summary["skipped"] == 0
