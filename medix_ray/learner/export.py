"""`medix-ray export CHECKPOINT OUT_DIR`: a learner checkpoint as a Hugging Face model folder.

The checkpoint is the folder a Ray Train report wrote (DeepSpeed ZeRO shards of every rank plus
the client state, which records the base model). The full fp32 weights are reassembled from the
shards, loaded into the base architecture, and saved as safetensors with the base model's
config, tokenizer and processor, so that transformers and vLLM load the result directly. Every file
of the checkpoint is read weights-only (`safe_load.py`): a checkpoint folder from elsewhere runs no
code when exported.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from medix_ray.learner.safe_load import CheckpointError, load_weights_only, weights_only_loads

__all__ = ["CheckpointError", "export_checkpoint", "read_client_state"]

logger = logging.getLogger(__name__)

STATE_TAG = "state"  # the tag DeepSpeedTrainEngine saves under


def read_client_state(checkpoint: Path) -> dict:
    """Returns the client state saved with a learner checkpoint (step, base model path, ...)."""
    model_states = sorted((checkpoint / STATE_TAG).glob("*model_states.pt"))
    if not model_states:
        raise CheckpointError(f"{checkpoint} is not a learner checkpoint: no {STATE_TAG}/*model_states.pt")
    with weights_only_loads(checkpoint):
        saved = load_weights_only(model_states[0])
    return {
        k: v
        for k, v in saved.items()
        if k
        not in (
            "module",
            "buffer_names",
            "param_shapes",
            "frozen_param_shapes",
            "shared_params",
            "frozen_param_fragments",
            "optimizer",
            "lr_scheduler",
            "sparse_tensor_module_names",
            "ds_config",
            "ds_version",
            "mp_world_size",
            "dp_world_size",
            "global_steps",
            "global_samples",
            "skipped_steps",
        )
    }


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, base_model: str | None = None, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Writes the checkpoint's policy as a Hugging Face folder; returns its path."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from medix_ray.models import resolve_model

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {checkpoint}")
    state = read_client_state(checkpoint)
    base = base_model or state.get("model_path")
    if not base:
        raise CheckpointError(f"{checkpoint} does not record its base model; pass base_model")
    base = resolve_model(base)
    with weights_only_loads(checkpoint):
        weights = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=STATE_TAG)
    config = AutoConfig.from_pretrained(base)
    vlm = getattr(config, "vision_config", None) is not None
    cls = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
    model = cls.from_pretrained(base, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"{checkpoint} does not match {base}: missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(out_dir)
    (AutoProcessor if vlm else AutoTokenizer).from_pretrained(base).save_pretrained(out_dir)
    logger.info("exported %s (step %s) to %s", checkpoint, state.get("step"), out_dir)
    return out_dir
