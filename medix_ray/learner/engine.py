"""The DeepSpeed engine of a learner rank, behind the `TrainEngine` interface of `update.py`.

ZeRO-2 or ZeRO-3; bf16 on GPU, fp32 on CPU. The optimizer steps once per mini-batch, whatever
its size: `minibatch_update` marks the last micro-batch as the gradient-accumulation boundary
(DeepSpeed's fixed `gradient_accumulation_steps` could not follow dynamic-sampling batch sizes),
and the loss is not divided by a micro-batch count again, since each micro-batch already
carries its exact share.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from medix_ray.config import LearnerConfig

logger = logging.getLogger(__name__)


def freeze_vision_tower(model: torch.nn.Module) -> int:
    """Stops gradients to the vision encoder of a Qwen-VL model; returns how many parameters were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}" or "vision_tower" in name:
            param.requires_grad_(False)
            frozen += param.numel()
    if frozen == 0:
        raise ValueError("learner.freeze_vision_tower is set but the policy has no vision tower")
    return frozen


def resolve_attention(setting: str, on_gpu: bool) -> str:
    """Returns the attention implementation for `learner.attention`: auto is flex_attention on GPU when
    this torch has it (a sparse block mask for the shared-prefix layout), sdpa otherwise."""
    if setting != "auto":
        return setting
    if on_gpu:
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError:
            return "sdpa"
        return "flex_attention"
    return "sdpa"


def load_with_attention(load, setting: str, on_gpu: bool) -> torch.nn.Module:
    """Returns `load(attn_implementation)` for `learner.attention`; flex_attention chosen by auto falls
    back to sdpa (logged) when the model does not support it."""
    impl = resolve_attention(setting, on_gpu)
    try:
        return load(impl)
    except (ValueError, ImportError) as exc:
        if setting != "auto" or impl == "sdpa":
            raise
        logger.warning("attention %s unavailable for this policy (%s); using sdpa", impl, exc)
        return load("sdpa")


def check_supported(cfg: LearnerConfig) -> None:
    """Raises ValueError for learner settings that are declared but not implemented yet."""
    if cfg.lora_rank > 0:
        raise ValueError(f"learner.lora_rank={cfg.lora_rank}: LoRA is not supported yet; set learner.lora_rank=0")
    if cfg.zero_stage not in (2, 3):
        raise ValueError(f"learner.zero_stage={cfg.zero_stage}: expected 2 or 3")


def deepspeed_config(cfg: LearnerConfig, on_gpu: bool, world_size: int) -> dict[str, Any]:
    """Returns the DeepSpeed config of a learner rank in a group of `world_size` ranks."""
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if not on_gpu and world_size > 1:
        # Over gloo each collective has a fixed cost: fewer, larger buckets (DeepSpeed's default is 5e7
        # elements) cut a 135M-parameter step's gradient reduction from ~20 calls to ~3. They cost
        # 1.6 GB of buffers per rank, so a single worker (nothing to reduce) keeps the default.
        zero.update(reduce_bucket_size=int(2e8), allgather_bucket_size=int(2e8))
    elif not on_gpu and cfg.zero_stage == 2:
        # One rank has nothing to reduce: ZeRO-2's contiguous gradient buffer and its reduce-scatter only
        # copy gradients. Without them a SmolLM2-135M update of 8 responses took 4.3 s instead of 4.7 s
        # (2 cores, docs/benchmarks.md); the gradients are the same (tests/learner/test_engine.py).
        zero.update(contiguous_gradients=False, reduce_scatter=False)
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,  # the boundary is set per backward instead
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": on_gpu},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if on_gpu:
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": cfg.lr, "betas": list(cfg.betas), "weight_decay": cfg.weight_decay},
        }
    else:
        # DeepSpeed's own CPU Adam compiles a C++ op at start-up; a torch AdamW is what runs on CPU here.
        config["zero_allow_untested_optimizer"] = True
    return config


class DeepSpeedTrainEngine:
    """A DeepSpeed engine seen as a `TrainEngine`."""

    def __init__(self, model: torch.nn.Module, cfg: LearnerConfig):
        import deepspeed

        check_supported(cfg)
        on_gpu = torch.cuda.is_available()
        if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()
        if cfg.freeze_vision_tower:
            logger.info("froze %d vision-tower parameters", freeze_vision_tower(model))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = None
        if not on_gpu:
            from medix_ray.learner.update import adamw

            optimizer = adamw(params, cfg.lr, cfg.betas, cfg.weight_decay)
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        self.engine, *_ = deepspeed.initialize(
            model=model,
            model_parameters=params,
            optimizer=optimizer,
            config=deepspeed_config(cfg, on_gpu, world),
        )
        # Forward goes through the engine, not engine.module: DeepSpeed's forward registers the backward
        # hooks ZeRO-3 needs to reduce gradients correctly (through the bare module a quarter of the
        # parameters of a 2-rank ZeRO-3 run were updated with the wrong gradient).
        self.module = self.engine
        self.model = self.engine.module

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> None:
        self.engine.step()

    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def save(self, directory: str, client_state: dict[str, Any]) -> None:
        """Writes this rank's shard of model, optimizer and scheduler state (every rank must call it)."""
        self.engine.save_checkpoint(directory, tag="state", client_state=client_state)

    def load(self, directory: str) -> dict[str, Any]:
        """Restores this rank's shard; returns the client state saved with it (files read weights-only)."""
        from medix_ray.learner.safe_load import weights_only_loads

        with weights_only_loads(directory):
            _, client_state = self.engine.load_checkpoint(directory, tag="state")
        return client_state or {}
