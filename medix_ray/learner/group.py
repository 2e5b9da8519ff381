"""The learner group: Ray Train TorchTrainer workers running DeepSpeed, driven by the controller.

Ray Train runs a training *function* on each worker; the controller needs *methods* (log-probs,
update, save, gather weights). A small command board actor bridges the two: the controller
posts a command with one payload per rank, every rank runs it (so collectives such as
`ray.train.report` and ZeRO gathers stay in step), and the controller collects the replies.

    group = LearnerGroup("smollm2-135m-instruct", cfg.learner, cfg.algorithm, storage_path="/tmp/runs", name="run1")
    group.start()                        # resumes from the run's latest checkpoint if there is one
    batch.old_logp = group.compute_logprobs(batch)
    stats = group.update(batch)          # cfg.learner.mini_batches_per_step optimizer steps
    group.save_checkpoint(step=1)
    weights = group.state_dict()         # full parameters from rank 0, for weight sync
    group.shutdown()

Rows are split across ranks per mini-batch, so each mini-batch's optimizer step sees all of its
rows; the loss is aggregated over the whole mini-batch on every rank (update.py).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from medix_ray.config import AlgorithmConfig, LearnerConfig, ModelConfig
from medix_ray.learner.batch import PolicyBatch

logger = logging.getLogger(__name__)


def _board_class():
    import ray

    @ray.remote(num_cpus=0)
    class CommandBoard:
        """Holds the current command and the ranks' replies (an async actor: waits do not block)."""

        def __init__(self, world: int):
            self.world = world
            self.command: tuple[int, str, list[Any]] | None = None
            self.replies: dict[int, dict[int, Any]] = {}
            self.changed = asyncio.Event()

        async def post(self, cmd_id: int, name: str, payloads: list[Any]) -> None:
            self.command = (cmd_id, name, payloads)
            self.replies[cmd_id] = {}
            self.changed.set()

        async def fetch(self, rank: int, after: int) -> tuple[int, str, Any]:
            while self.command is None or self.command[0] <= after:
                self.changed.clear()
                await self.changed.wait()
            cmd_id, name, payloads = self.command
            return cmd_id, name, payloads[rank] if payloads else None

        async def reply(self, rank: int, cmd_id: int, result: Any) -> None:
            self.replies.setdefault(cmd_id, {})[rank] = result
            self.changed.set()

        async def collect(self, cmd_id: int, timeout_s: float) -> list[Any] | None:
            deadline = time.monotonic() + timeout_s
            while len(self.replies.get(cmd_id, {})) < self.world:
                self.changed.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))
                except TimeoutError:
                    pass
            replies = self.replies.pop(cmd_id)
            return [replies[r] for r in range(self.world)]

    return CommandBoard


class LearnerError(RuntimeError):
    """A learner rank failed or did not answer; the message says which command and why."""


def _load_model(model_path: str, model_cfg: ModelConfig, on_gpu: bool, attention: str = "sdpa"):
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


def _gathered_state_dict(engine) -> dict[str, torch.Tensor]:
    """Returns the full parameters as CPU tensors (ZeRO-3 shards gathered; every rank must call it)."""
    model = engine.model
    names = [name for name, _ in model.named_parameters()]
    state = {name: t.to("cpu", copy=True) for name, t in _param_stream(engine, names)}
    for name, buf in model.named_buffers():
        state.setdefault(name, buf.detach().to("cpu", copy=True))
    return state


def _param_stream(engine, names: list[str]):
    """Yields (name, full parameter) in `names` order; ZeRO-3 shards are gathered one at a time (a
    collective: every rank iterates in step)."""
    import deepspeed

    stage3 = engine.engine.zero_optimization_stage() == 3
    params = dict(engine.model.named_parameters())
    for name in names:
        param = params[name]
        with deepspeed.zero.GatheredParameters([param], enabled=stage3):
            yield name, param.detach().clone() if stage3 else param.detach()


def _param_specs(engine, dtype: str) -> list[list]:
    """Returns [name, dtype, shape] of every parameter as the rollout engine receives it."""
    out = []
    for name, param in engine.model.named_parameters():
        shape = tuple(getattr(param, "ds_shape", None) or param.shape)  # ZeRO-3 keeps the full shape in ds_shape
        out.append([name, dtype, list(shape)])
    return out


def _resolve(payload: Any) -> Any:
    """Returns a command's payload, fetched from the object store when it came as a reference."""
    import ray

    return ray.get(payload) if isinstance(payload, ray.ObjectRef) else payload


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


def learner_loop(config: dict[str, Any]) -> None:
    """The Ray Train worker function: builds the DeepSpeed engine, then serves the board's commands."""
    import deepspeed
    import ray
    import ray.train

    from medix_ray.learner.engine import DeepSpeedTrainEngine
    from medix_ray.learner.logprobs import Layout, batch_logprobs
    from medix_ray.learner.update import minibatch_update

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    on_gpu = torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    learner_cfg: LearnerConfig = config["learner"]
    algo: AlgorithmConfig = config["algorithm"]
    board = ray.get_actor(config["board"], namespace=config["namespace"])
    model_cfg: ModelConfig = config["model"]
    layout = Layout.from_config(learner_cfg)
    model = _load_model(config["model_path"], model_cfg, on_gpu, learner_cfg.attention)
    engine = DeepSpeedTrainEngine(model, learner_cfg)
    # The KL reference is the frozen base policy; a full copy on each rank (not sharded).
    reference = (
        _load_model(config["model_path"], model_cfg, on_gpu, learner_cfg.attention).eval().requires_grad_(False)
        if algo.kl_coef > 0
        else None
    )
    state: dict[str, Any] = {"step": 0}
    sender = None  # the weight-sync sender (medix_ray/sync), rank 0 transmits
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = engine.load(directory)
            _restore_rng(Path(directory) / f"rng_rank{rank}.pt")
        logger.info("rank %d resumed from step %s", rank, state.get("step"))
    ray.get(board.reply.remote(rank, 0, {"ready": True, "state": state}))
    last = 0
    while True:
        cmd_id, name, payload = ray.get(board.fetch.remote(rank, last))
        last = cmd_id
        try:
            if name == "stop":
                ray.get(board.reply.remote(rank, cmd_id, None))
                return
            if name == "logprobs":
                shard: PolicyBatch = _resolve(payload)
                result: Any = (
                    batch_logprobs(engine.module, shard, layout, config["temperature"]) if shard.size else None
                )
            elif name == "ref_logprobs":
                if reference is None:
                    raise ValueError("reference log-probs need algorithm.kl_coef > 0 (no reference model loaded)")
                shard = _resolve(payload)
                result = batch_logprobs(reference, shard, layout, config["temperature"])
            elif name == "update":
                shard = _resolve(payload)
                per_mini = shard.size // learner_cfg.mini_batches_per_step
                result = [
                    asdict(
                        minibatch_update(
                            engine,
                            shard.select(k * per_mini, (k + 1) * per_mini),
                            algo,
                            layout=layout,
                            norm_length=config["norm_length"],
                            temperature=config["temperature"],
                            on_policy=learner_cfg.mini_batches_per_step == 1,
                        )
                    )
                    for k in range(learner_cfg.mini_batches_per_step)
                ]
            elif name == "save":
                with tempfile.TemporaryDirectory() as directory:
                    engine.save(directory, payload)
                    _save_rng(Path(directory) / f"rng_rank{rank}.pt")
                    ray.train.report(
                        {"step": payload.get("step", 0)}, checkpoint=ray.train.Checkpoint.from_directory(directory)
                    )
                result = True
            elif name == "sync_open":
                from medix_ray.sync.sender import WeightSender

                if sender is not None:
                    sender.close()
                sender = WeightSender(payload["backend"], payload["bucket_bytes"], payload.get("timeout_s", 600.0))
                result = {
                    "rendezvous": sender.open(payload["world_size"]) if rank == 0 else None,
                    "backend": sender.backend,
                    "specs": _param_specs(engine, payload["dtype"]),
                }
            elif name == "sync_connect":
                if sender is None:
                    raise RuntimeError("sync_connect before sync_open")
                if rank == 0:
                    sender.connect()
                result = True
            elif name == "sync_push":
                from medix_ray.sync.buckets import ParamSpec

                if sender is None:
                    raise RuntimeError("sync_push before sync_open")
                specs = [ParamSpec(n, d, tuple(shape)) for n, d, shape in payload["specs"]]
                result = sender.send(
                    _param_stream(engine, [sp.name for sp in specs]), specs, checksum=payload["checksum"]
                )
            elif name == "objstore_push":
                # The object-store baseline of bench/weight_sync.py: one Ray object per tensor (rank 0).
                dtype = getattr(torch, payload["dtype"])
                refs = [(n, ray.put(t.to(dtype))) for n, t in _param_stream(engine, payload["names"])]
                result = [refs] if rank == 0 else None
            elif name == "state_dict":
                full = _gathered_state_dict(engine)
                # In a list: a bare ObjectRef argument would be resolved, copying the weights through the board.
                result = [ray.put(full)] if rank == 0 else None
            else:
                raise ValueError(f"unknown learner command {name!r}")
        except Exception as exc:  # reported to the controller, which raises it with the rank
            logger.exception("learner rank %d failed on %s", rank, name)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        ray.get(board.reply.remote(rank, cmd_id, result))


class LearnerGroup:
    """The controller's handle on the learner workers."""

    def __init__(
        self,
        model: str,
        learner_cfg: LearnerConfig,
        algo_cfg: AlgorithmConfig,
        *,
        storage_path: str,
        name: str,
        temperature: float = 1.0,
        norm_length: int | None = None,
        timeout_s: float = 1800.0,
        model_cfg: ModelConfig | None = None,
        keep_checkpoints: int = 2,
    ):
        from medix_ray.learner.engine import check_supported
        from medix_ray.models import resolve_model

        check_supported(learner_cfg)
        self.model_path = resolve_model(model)
        self.learner_cfg = learner_cfg
        self.algo_cfg = algo_cfg
        self.storage_path = storage_path
        self.name = name
        self.temperature = temperature
        self.norm_length = norm_length
        self.timeout_s = timeout_s
        self.model_cfg = model_cfg or ModelConfig()
        self.keep_checkpoints = keep_checkpoints
        self.world = learner_cfg.num_workers
        self._cmd = 0
        self._thread: threading.Thread | None = None
        self._fit_error: BaseException | None = None
        self.resumed_state: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Starts the workers (resuming from the run's latest checkpoint); returns the resumed client state."""
        import ray
        from ray.train import CheckpointConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        namespace = ray.get_runtime_context().namespace
        board_name = f"medix-learner-board-{uuid.uuid4().hex[:8]}"
        self._board = _board_class().options(name=board_name, namespace=namespace).remote(self.world)
        use_gpu = self.learner_cfg.use_gpu
        trainer = TorchTrainer(
            learner_loop,
            train_loop_config={
                "learner": self.learner_cfg,
                "algorithm": self.algo_cfg,
                "model_path": self.model_path,
                "model": self.model_cfg,
                "board": board_name,
                "namespace": namespace,
                "temperature": self.temperature,
                "norm_length": self.norm_length,
            },
            scaling_config=ScalingConfig(
                num_workers=self.world, use_gpu=use_gpu, resources_per_worker={"CPU": self.learner_cfg.cpus_per_worker}
            ),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(
                name=self.name,
                storage_path=self.storage_path,
                checkpoint_config=CheckpointConfig(num_to_keep=self.keep_checkpoints),
            ),
        )

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as exc:  # surfaced by the next command instead of dying in a thread
                self._fit_error = exc

        self._thread = threading.Thread(target=fit, name="medix-learner-fit", daemon=True)
        self._thread.start()
        ready = self._collect(0, "start")
        self.resumed_state = ready[0]["state"]
        return self.resumed_state

    def shutdown(self) -> None:
        if self._thread is None:
            return
        import ray

        self._command("stop", None)
        self._thread.join(timeout=120)
        self._thread = None
        ray.kill(self._board)

    def abort(self) -> None:
        """Tears the group down after a failure, without asking the (possibly dead) ranks anything."""
        import ray

        try:
            ray.kill(self._board)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self._thread is not None:
            self._thread.join(timeout=120)
        self._thread = None

    # -- commands -------------------------------------------------------------------------
    def _collect(self, cmd_id: int, name: str) -> list[Any]:
        import ray

        deadline = time.monotonic() + self.timeout_s
        while True:
            if self._fit_error is not None:
                raise LearnerError(f"learner workers failed during '{name}': {self._fit_error}") from self._fit_error
            replies = ray.get(self._board.collect.remote(cmd_id, 5.0))
            if replies is not None:
                break
            if time.monotonic() > deadline:
                raise LearnerError(f"learner command '{name}' got no answer from all ranks in {self.timeout_s:.0f} s")
        for rank, r in enumerate(replies):
            if isinstance(r, dict) and "error" in r:
                raise LearnerError(f"learner rank {rank} failed on '{name}': {r['error']}")
        return replies

    def _command(self, name: str, payloads: list[Any] | None) -> list[Any]:
        return self._collect(self.post(name, payloads), name)

    def post(self, name: str, payloads: list[Any] | None) -> int:
        """Posts a command to every rank without waiting; `collect(cmd_id, name)` gets the replies.

        For commands that must overlap another party's work (a weight-sync broadcast with the rollout
        replicas); `payloads` holds one entry per rank, or None."""
        import ray

        self._cmd += 1
        ray.get(self._board.post.remote(self._cmd, name, payloads or []))
        return self._cmd

    def collect(self, cmd_id: int, name: str) -> list[Any]:
        """Returns every rank's reply to a posted command (raises LearnerError on a rank's failure)."""
        return self._collect(cmd_id, name)

    def _shards(self, batch: PolicyBatch, groups: int) -> list[Any]:
        """Returns one object ref per rank: each rank gets an equal slice of every one of `groups` chunks."""
        import ray

        rows_per_group = batch.size // groups
        if batch.size % groups or rows_per_group % self.world:
            raise ValueError(
                f"batch of {batch.size} rows cannot be split into {groups} mini-batches over "
                f"{self.world} learner ranks evenly; use a multiple of {groups * self.world}"
            )
        per_rank = rows_per_group // self.world
        shards = []
        for rank in range(self.world):
            parts = [
                batch.select(g * rows_per_group + rank * per_rank, g * rows_per_group + (rank + 1) * per_rank)
                for g in range(groups)
            ]
            shards.append(ray.put(_concat(parts)))
        return shards

    def compute_logprobs(self, batch: PolicyBatch) -> torch.Tensor:
        """Returns the current policy's token log-probs of the batch, `[N, T - 1]`."""
        return self._gather_rows(batch, self._command("logprobs", self._shards(batch, 1)))

    @staticmethod
    def _gather_rows(batch: PolicyBatch, parts: list[torch.Tensor]) -> torch.Tensor:
        """Returns the ranks' per-row results placed back in the batch's row order, `[N, T - 1]`."""
        out = torch.zeros_like(batch.loss_mask)
        start = 0
        for part in parts:
            out[start : start + part.shape[0], : part.shape[1]] = part
            start += part.shape[0]
        return out

    def compute_ref_logprobs(self, batch: PolicyBatch) -> torch.Tensor:
        """Returns the frozen reference policy's token log-probs, `[N, T - 1]` (needs algorithm.kl_coef > 0)."""
        return self._gather_rows(batch, self._command("ref_logprobs", self._shards(batch, 1)))

    def update(self, batch: PolicyBatch) -> list[dict[str, Any]]:
        """Applies `learner.mini_batches_per_step` optimizer steps; returns rank 0's metrics per mini-batch."""
        k = self.learner_cfg.mini_batches_per_step
        return self._command("update", self._shards(batch, k))[0]

    def save_checkpoint(self, **client_state: Any) -> None:
        """Writes a Ray Train checkpoint of every rank's shard (model, optimizer, scheduler, client state).

        The client state also records the base model, so that `medix-ray export` needs nothing else.
        """
        self._command("save", [{"model_path": self.model_path, **client_state}] * self.world)

    def latest_checkpoint(self) -> Path | None:
        """Returns the newest checkpoint folder of this run (Ray Train names them checkpoint_<time>)."""
        run_dir = Path(self.storage_path) / self.name
        found = sorted((p for p in run_dir.glob("checkpoint_*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Returns the full policy parameters (gathered from ZeRO shards) as CPU tensors."""
        import ray

        return ray.get(self._command("state_dict", None)[0][0])


def _concat(parts: list[PolicyBatch]) -> PolicyBatch:
    """Returns the rows of several batches as one (right-padded to the widest)."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.input_ids.shape[1] for p in parts)

    def pad(t: torch.Tensor | None, w: int, value: float = 0) -> torch.Tensor | None:
        return None if t is None else torch.nn.functional.pad(t, (0, w - t.shape[1]), value=value)

    first = parts[0]
    return PolicyBatch(
        input_ids=torch.cat([pad(p.input_ids, width) for p in parts]),
        attention_mask=torch.cat([pad(p.attention_mask, width) for p in parts]),
        loss_mask=torch.cat([pad(p.loss_mask, width - 1) for p in parts]),
        advantages=torch.cat([p.advantages for p in parts]),
        old_logp=None if first.old_logp is None else torch.cat([pad(p.old_logp, width - 1) for p in parts]),
        ref_logp=None if first.ref_logp is None else torch.cat([pad(p.ref_logp, width - 1) for p in parts]),
        pixel_values=None
        if first.pixel_values is None
        else torch.cat([p.pixel_values for p in parts if p.pixel_values is not None]),
        image_grid_thw=None
        if first.image_grid_thw is None
        else torch.cat([p.image_grid_thw for p in parts if p.image_grid_thw is not None]),
        images_per_row=[n for p in parts for n in p.images_per_row],
        prompt_lens=None if first.prompt_lens is None else torch.cat([p.prompt_lens for p in parts]),
        group_ids=None if first.group_ids is None else torch.cat([p.group_ids for p in parts]),
        extra={k: torch.cat([pad(p.extra[k], width) for p in parts]) for k in first.extra},
    )
