"""One learner rank: the DeepSpeed engine, the frozen reference and the weight-sync endpoint, as methods.

The learner group (group.py) runs `serve_worker` on every Ray Train worker. It builds a
`LearnerWorker` and answers the group's calls: each is a typed call object (calls.py) whose
`run(worker)` calls one of these methods and returns its typed result.

    worker.logprobs(shard)        # [rows, T - 1] log-probs of the current policy
    worker.ref_logprobs(shard)    # of the frozen reference (algorithm.kl_coef > 0)
    worker.update(shard)          # learner.mini_batches_per_step optimizer steps -> [UpdateStats]
    worker.save(client_state)     # a Ray Train checkpoint of this rank's shard
    worker.state_dict()           # rank 0: [ObjectRef of the full parameters]
    worker.sync.open/connect/push # medix_ray/sync/endpoint.py
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medix_ray.config import AlgorithmConfig, LearnerConfig, ModelConfig
from medix_ray.trajectory import PolicyBatch, UpdateStats

logger = logging.getLogger(__name__)


def load_policy(model_path: str, model_cfg: ModelConfig, on_gpu: bool, attention: str = "sdpa"):
    """Returns the policy in `model.dtype` (auto: bf16 on GPU, fp32 on CPU), with `model.trust_remote_code`,
    using `learner.attention` (engine.load_with_attention: flex_attention falls back to sdpa)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from medix_ray.learner.engine import load_with_attention
    from medix_ray.models import learner_dtype

    remote = model_cfg.trust_remote_code
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=remote)
    cls = AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None else AutoModelForCausalLM
    return load_with_attention(
        lambda impl: cls.from_pretrained(
            model_path, dtype=learner_dtype(model_cfg.dtype, on_gpu), trust_remote_code=remote, attn_implementation=impl
        ),
        attention,
        on_gpu,
    )


def param_stream(engine, names: list[str]):
    """Yields (name, full parameter) in `names` order; ZeRO-3 shards are gathered one at a time (a
    collective: every rank iterates in step)."""
    import deepspeed

    stage3 = engine.engine.zero_optimization_stage() == 3
    params = dict(engine.model.named_parameters())
    for name in names:
        param = params[name]
        with deepspeed.zero.GatheredParameters([param], enabled=stage3):
            yield name, param.detach().clone() if stage3 else param.detach()


def param_specs(engine, dtype: str) -> list[list]:
    """Returns [name, dtype, shape] of every parameter as the rollout engine receives it."""
    out = []
    for name, param in engine.model.named_parameters():
        shape = tuple(getattr(param, "ds_shape", None) or param.shape)  # ZeRO-3 keeps the full shape in ds_shape
        out.append([name, dtype, list(shape)])
    return out


def gathered_state_dict(engine) -> dict[str, torch.Tensor]:
    """Returns the full parameters as CPU tensors (ZeRO-3 shards gathered; every rank must call it)."""
    model = engine.model
    names = [name for name, _ in model.named_parameters()]
    state = {name: t.to("cpu", copy=True) for name, t in param_stream(engine, names)}
    for name, buf in model.named_buffers():
        state.setdefault(name, buf.detach().to("cpu", copy=True))
    return state


def _save_rng(path: Path) -> None:
    """Writes this process's RNG states as tensors and plain values (loadable with weights_only=True)."""
    import random

    import numpy as np

    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    torch.save(
        {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": {"version": version, "state": list(mt), "gauss": gauss},
            "numpy": {
                "bit_generator": np_state["bit_generator"],
                "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                "pos": int(np_state["state"]["pos"]),
                "has_gauss": int(np_state["has_gauss"]),
                "gauss": float(np_state["gauss"]),
            },
        },
        path,
    )


def _restore_rng(path: Path) -> None:
    import random

    import numpy as np

    from medix_ray.learner.safe_load import load_weights_only

    if not path.is_file():
        return
    rng = load_weights_only(path)
    torch.set_rng_state(rng["torch"])
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npr = rng["numpy"]
    np.random.set_state(
        {
            "bit_generator": npr["bit_generator"],
            "state": {"key": npr["key"].numpy().astype(np.uint32), "pos": npr["pos"]},
            "has_gauss": npr["has_gauss"],
            "gauss": npr["gauss"],
        }
    )
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


@dataclass(frozen=True)
class CallFailed:
    """A rank's reply when its call raised; the group raises LearnerError with it."""

    error: str


class LearnerWorker:
    """One rank of the learner group (inside a Ray Train worker, after the process group is up)."""

    def __init__(self, config: dict[str, Any], rank: int):
        import ray.train

        from medix_ray.learner.engine import DeepSpeedTrainEngine
        from medix_ray.learner.logprobs import Layout
        from medix_ray.sync.endpoint import LearnerSyncEndpoint

        self.rank = rank
        self.learner_cfg: LearnerConfig = config["learner"]
        self.algo: AlgorithmConfig = config["algorithm"]
        self.model_path: str = config["model_path"]
        self.temperature: float = config["temperature"]
        self.norm_length: int | None = config["norm_length"]
        model_cfg: ModelConfig = config["model"]
        on_gpu = torch.cuda.is_available()
        self.layout = Layout.from_config(self.learner_cfg)
        self.engine = DeepSpeedTrainEngine(
            load_policy(self.model_path, model_cfg, on_gpu, self.learner_cfg.attention), self.learner_cfg
        )
        # The KL reference is the frozen base policy; a full copy on each rank (not sharded).
        self.reference = (
            load_policy(self.model_path, model_cfg, on_gpu, self.learner_cfg.attention).eval().requires_grad_(False)
            if self.algo.kl_coef > 0
            else None
        )
        self.sync = LearnerSyncEndpoint(
            rank, lambda names: param_stream(self.engine, names), lambda dtype: param_specs(self.engine, dtype)
        )
        self.state: dict[str, Any] = {"step": 0}
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                self.state = self.engine.load(directory)
                _restore_rng(Path(directory) / f"rng_rank{rank}.pt")
            logger.info("rank %d resumed from step %s", rank, self.state.get("step"))

    # -- the API --------------------------------------------------------------------------
    def logprobs(self, shard: PolicyBatch) -> torch.Tensor | None:
        from medix_ray.learner.logprobs import batch_logprobs

        return batch_logprobs(self.engine.module, shard, self.layout, self.temperature) if shard.size else None

    def ref_logprobs(self, shard: PolicyBatch) -> torch.Tensor:
        from medix_ray.learner.logprobs import batch_logprobs

        if self.reference is None:
            raise ValueError("reference log-probs need algorithm.kl_coef > 0 (no reference model loaded)")
        return batch_logprobs(self.reference, shard, self.layout, self.temperature)

    def update(self, shard: PolicyBatch) -> list[UpdateStats]:
        from medix_ray.learner.update import minibatch_update

        k = self.learner_cfg.mini_batches_per_step
        per_mini = shard.size // k
        return [
            minibatch_update(
                self.engine,
                shard.select(i * per_mini, (i + 1) * per_mini),
                self.algo,
                layout=self.layout,
                norm_length=self.norm_length,
                temperature=self.temperature,
                on_policy=k == 1,
            )
            for i in range(k)
        ]

    def save(self, client_state: dict[str, Any]) -> bool:
        import ray.train

        with tempfile.TemporaryDirectory() as directory:
            self.engine.save(directory, client_state)
            _save_rng(Path(directory) / f"rng_rank{self.rank}.pt")
            ray.train.report(
                {"step": client_state.get("step", 0)}, checkpoint=ray.train.Checkpoint.from_directory(directory)
            )
        return True

    def state_dict(self) -> list | None:
        import ray

        full = gathered_state_dict(self.engine)
        # In a list: a bare ObjectRef reply would be resolved, copying the weights through the board.
        return [ray.put(full)] if self.rank == 0 else None


def serve_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function: builds the rank's `LearnerWorker`, then answers the group's calls
    from its call board until told to stop."""
    import deepspeed
    import ray
    import ray.train

    from medix_ray.learner.calls import Stop

    rank = ray.train.get_context().get_world_rank()
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    board = ray.get_actor(config["board"], namespace=config["namespace"])
    worker = LearnerWorker(config, rank)
    ray.get(board.reply.remote(rank, 0, {"ready": True, "state": worker.state}))
    last = 0
    while True:
        call_id, call = ray.get(board.fetch.remote(rank, last))
        last = call_id
        try:
            result = call.run(worker)
        except Exception as exc:  # reported to the controller, which raises it with the rank
            logger.exception("learner rank %d failed on %s", rank, call.name)
            result = CallFailed(f"{type(exc).__name__}: {exc}")
        ray.get(board.reply.remote(rank, call_id, result))
        if isinstance(call, Stop):
            return
