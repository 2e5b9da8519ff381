"""The learner group: Ray Train TorchTrainer workers running DeepSpeed, driven by the controller.

Ray Train runs a training *function* on each worker; the controller needs *methods* (log-probs,
update, save, gather weights). Each worker therefore builds a `LearnerWorker` (worker.py), and a
small call board actor carries typed call objects (calls.py) to it: the group posts one call per
rank, every rank runs it (so collectives such as `ray.train.report` and ZeRO gathers stay in step),
and the group collects the typed replies.

    group = LearnerGroup("smollm2-135m-instruct", cfg.learner, cfg.algorithm, storage_path="/tmp/runs", name="run1")
    group.start()                        # resumes from the run's latest checkpoint if there is one
    batch.old_logp = group.compute_logprobs(batch)
    stats = group.update(batch)          # [UpdateStats]: cfg.learner.mini_batches_per_step optimizer steps
    group.save_checkpoint(step=1)
    weights = group.state_dict()         # full parameters from rank 0
    opened = group.open_sync(SyncOpen(...))              # the weight sync's methods (medix_ray/sync/)
    pending = group.push_weights(SyncPush(...))          # overlaps the replicas' receive; pending.result()
    group.foreach_worker(lambda worker, payload: ...)    # a function run on every rank (benchmarks, tools)
    group.shutdown()

One call runs at a time: `group.lock` is held by every call, and by the weight sync around a push
(async mode re-syncs a restarted replica from a rollout thread while the main thread trains).

Rows are split across ranks per mini-batch, so each mini-batch's optimizer step sees all of its
rows; the loss is aggregated over the whole mini-batch on every rank (update.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medix_ray.config import AlgorithmConfig, LearnerConfig, ModelConfig
from medix_ray.learner.calls import (
    ComputeLogprobs,
    ComputeRefLogprobs,
    ConnectSync,
    GatherState,
    LearnerCall,
    OpenSync,
    PushWeights,
    RunFunction,
    SaveCheckpoint,
    Stop,
    Update,
)
from medix_ray.sync.endpoint import SyncOpen, SyncOpened, SyncPush
from medix_ray.trajectory import PolicyBatch, UpdateStats

logger = logging.getLogger(__name__)


def _board_class():
    import ray

    @ray.remote(num_cpus=0)
    class CallBoard:
        """Holds the current calls (one LearnerCall per rank) and the ranks' replies (an async actor: waits
        do not block)."""

        def __init__(self, world: int):
            self.world = world
            self.command: tuple[int, list[Any]] | None = None
            self.replies: dict[int, dict[int, Any]] = {}
            self.changed = asyncio.Event()

        async def post(self, cmd_id: int, calls: list[Any]) -> None:
            self.command = (cmd_id, calls)
            self.replies[cmd_id] = {}
            self.changed.set()

        async def fetch(self, rank: int, after: int) -> tuple[int, Any]:
            while self.command is None or self.command[0] <= after:
                self.changed.clear()
                await self.changed.wait()
            cmd_id, calls = self.command
            return cmd_id, calls[rank]

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

    return CallBoard


class LearnerError(RuntimeError):
    """A learner rank failed or did not answer; the message says which call and why."""


@dataclass
class PendingCall:
    """A call posted to every rank; `result()` waits for all replies, in rank order (raises LearnerError on a
    failure)."""

    group: LearnerGroup
    call_id: int
    name: str

    def result(self) -> list[Any]:
        return self.group._collect(self.call_id, self.name)

    def first(self) -> Any:
        """Waits for all replies; returns rank 0's."""
        return self.result()[0]


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
        self.lock = threading.RLock()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Starts the workers (resuming from the run's latest checkpoint); returns the resumed client state."""
        import ray
        from ray.train import CheckpointConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from medix_ray.learner.worker import serve_worker

        namespace = ray.get_runtime_context().namespace
        board_name = f"medix-learner-board-{uuid.uuid4().hex[:8]}"
        self._board = _board_class().options(name=board_name, namespace=namespace).remote(self.world)
        use_gpu = self.learner_cfg.use_gpu
        trainer = TorchTrainer(
            serve_worker,
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

        with self.lock:
            self._post([Stop()] * self.world).result()
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

    # -- calls ----------------------------------------------------------------------------
    def _collect(self, call_id: int, name: str) -> list[Any]:
        import ray

        from medix_ray.learner.worker import CallFailed

        deadline = time.monotonic() + self.timeout_s
        while True:
            if self._fit_error is not None:
                raise LearnerError(f"learner workers failed during '{name}': {self._fit_error}") from self._fit_error
            replies = ray.get(self._board.collect.remote(call_id, 5.0))
            if replies is not None:
                break
            if time.monotonic() > deadline:
                raise LearnerError(f"learner call '{name}' got no answer from all ranks in {self.timeout_s:.0f} s")
        for rank, r in enumerate(replies):
            if isinstance(r, CallFailed):
                raise LearnerError(f"learner rank {rank} failed on '{name}': {r.error}")
        return replies

    def _post(self, calls: list[LearnerCall]) -> PendingCall:
        """Posts one call per rank without waiting."""
        import ray

        wrong = [type(c).__name__ for c in calls if not isinstance(c, LearnerCall)]
        if wrong:
            raise TypeError(f"learner calls are LearnerCall objects; got {wrong[0]}")
        if len(calls) != self.world:
            raise ValueError(
                f"learner call {calls[0].name if calls else '?'} got {len(calls)} calls for {self.world} ranks"
            )
        self._cmd += 1
        ray.get(self._board.post.remote(self._cmd, calls))
        return PendingCall(self, self._cmd, calls[0].name)

    def _run(self, calls: list[LearnerCall]) -> list[Any]:
        """Runs one call per rank; returns the replies in rank order."""
        with self.lock:
            return self._post(calls).result()

    def foreach_worker(self, fn: Callable[[Any, Any], Any], payloads: list[Any] | None = None) -> list[Any]:
        """Runs `fn(worker, payload)` on every rank (the `LearnerWorker`); returns the results in rank order.

        The extension point for benchmarks and tools that need the engine itself (bench/weight_sync.py's
        object-store baseline); `fn` must be importable or picklable by cloudpickle."""
        return self._run([RunFunction(fn, p) for p in (payloads or [None] * self.world)])

    # -- the weight sync's calls (medix_ray/sync/coordinator.py holds `lock` around a push) --------------
    def open_sync(self, request: SyncOpen) -> SyncOpened:
        """Opens a weight-sync group on every rank; returns rank 0's reply (its rendezvous and the specs)."""
        return self._run([OpenSync(request)] * self.world)[0]

    def connect_sync(self) -> PendingCall:
        """Joins the sync group (rank 0 returns once every rollout worker has joined): overlaps their join."""
        return self._post([ConnectSync()] * self.world)

    def push_weights(self, request: SyncPush) -> PendingCall:
        """Broadcasts the weights (every rank takes part: ZeRO-3 gathers): overlaps the replicas' receive.
        `result()[0]` is rank 0's SentPush."""
        return self._post([PushWeights(request)] * self.world)

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
        return self._gather_rows(batch, self._run([ComputeLogprobs(s) for s in self._shards(batch, 1)]))

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
        return self._gather_rows(batch, self._run([ComputeRefLogprobs(s) for s in self._shards(batch, 1)]))

    def update(self, batch: PolicyBatch) -> list[UpdateStats]:
        """Applies `learner.mini_batches_per_step` optimizer steps; returns rank 0's metrics per mini-batch."""
        k = self.learner_cfg.mini_batches_per_step
        return self._run([Update(s) for s in self._shards(batch, k)])[0]

    def save_checkpoint(self, **client_state: Any) -> None:
        """Writes a Ray Train checkpoint of every rank's shard (model, optimizer, scheduler, client state).

        The client state also records the base model, so that `medix-ray export` needs nothing else.
        """
        self._run([SaveCheckpoint({"model_path": self.model_path, **client_state})] * self.world)

    def latest_checkpoint(self) -> Path | None:
        """Returns the newest checkpoint folder of this run (Ray Train names them checkpoint_<time>)."""
        run_dir = Path(self.storage_path) / self.name
        found = sorted((p for p in run_dir.glob("checkpoint_*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Returns the full policy parameters (gathered from ZeRO shards) as CPU tensors."""
        import ray

        return ray.get(self._run([GatherState()] * self.world)[0][0])


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
        behaviour_logp=None
        if first.behaviour_logp is None
        else torch.cat([pad(p.behaviour_logp, width - 1) for p in parts]),
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
