"""The rollout fleet: vLLM AsyncLLM engines as a Ray Serve deployment with R replicas.

A request carries one sample (question text and image references; images are decoded and
processed inside the replica, once) and its `Sampling`; the reply is a `Rollout`
(medix_ray/trajectory.py): the n responses with their token ids, the per-token log-probs of the
sampled tokens and the finish reason, the policy version that produced them, the replica's id, the
prompt token ids and the processed images the learner batch reuses.

Weight updates use vLLM's weight-transfer protocol (init_weight_transfer_engine →
start_weight_update → update_weights → finish_weight_update) with our engine
(medix_ray/sync/engine.py: NCCL on GPU, gloo on CPU), which checks each bucket's digest before
loading it. Around an update the replica pauses: new requests wait at a gate, the update starts
once the requests in flight have finished, and the gate reopens with the new version. No request
is lost, and none is answered by a half-updated model: a replica whose push was rejected (a bucket
failed its digest check, or loading failed part-way, so its weights may be mixed) keeps its old
version and refuses requests (`StaleWeights`) until a later push is accepted; its health check stays
green so that Serve keeps it (only a dead vLLM engine fails the check, and Serve replaces the replica).

    handle = serve.run(build_rollout_app(cfg), name="medix-rollout", route_prefix=None)
    rollout = handle.generate.remote(sample, Sampling(n=4, max_tokens=96)).result()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

from ray import serve

from medix_ray.config import MedixConfig
from medix_ray.data.images import PixelBounds
from medix_ray.data.output_format import OutputFormat
from medix_ray.data.prompts import is_multimodal
from medix_ray.data.schema import Sample
from medix_ray.learner.batch import process_images
from medix_ray.rollout.vllm_engine import engine_kwargs, load_prompt_renderer, on_gpu, set_cpu_env, vllm_prompt
from medix_ray.sync.receiver import BucketUpdate, Fingerprint, JoinReply, PushReply, ReceiveReport
from medix_ray.trajectory import ReplicaInfo, ReplicaUnhealthy, Response, Rollout, Sampling, StaleWeights

logger = logging.getLogger(__name__)


class RolloutDeployment:
    """One vLLM engine; `generate` for rollouts, `join_sync` / `update_weights` for weight sync."""

    # Mixed into each vLLM worker (a subclass may name its own: the tests' fault injection, tests/sync/faults.py).
    worker_extension = "medix_ray.sync.worker_ext.RolloutWorkerExtension"

    def __init__(self, cfg: MedixConfig, model_path: str):
        set_cpu_env()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from medix_ray.sync.engine import ENGINE_NAMES
        from medix_ray.sync.sender import resolve_backend

        self.cfg = cfg
        self.format = OutputFormat.from_config(cfg)
        self.bounds = PixelBounds.from_config(cfg.data)
        self.renderer = load_prompt_renderer(model_path, cfg.model.trust_remote_code)
        self.multimodal = is_multimodal(self.renderer)
        self.backend = resolve_backend(cfg.sync.backend)
        kwargs = engine_kwargs(model_path, cfg.rollout, self.multimodal, cfg.model)
        start = time.monotonic()
        self.engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                **kwargs,
                worker_extension_cls=self.worker_extension,
                weight_transfer_config={"backend": ENGINE_NAMES[self.backend]},
            )
        )
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - constructed outside Serve (tests)
            self.replica_id = uuid.uuid4().hex[:8]
        self.version = 0
        self.dtype = str(self.engine.model_config.dtype).removeprefix("torch.")
        self.refusing = ""  # why this replica refuses requests (its last push was rejected); "" = serving
        self._open = asyncio.Event()
        self._open.set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        logger.info("rollout replica %s up in %.1f s", self.replica_id, time.monotonic() - start)

    # -- rollouts ------------------------------------------------------------------------
    async def generate(self, sample: Sample, sampling: Sampling, min_version: int = 0) -> Rollout:
        """Returns the n responses to one sample with token ids, log-probs, finish reasons and version, and the
        sample's images as the policy's processor made them (for the learner batch: decoded once, here).

        A replica that holds an older policy than `min_version` (it restarted and has not been synced
        yet), or whose last push was rejected, raises StaleWeights; the fleet then has it synced and asks
        again."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if not isinstance(sampling, Sampling):
            raise TypeError(f"sampling must be a medix_ray.trajectory.Sampling; got {type(sampling).__name__}")
        if self.engine.errored:
            raise ReplicaUnhealthy(self.replica_id)
        # Decode and process the images before waiting at the gate.
        prompt = vllm_prompt(sample, self.renderer, self.format, self.bounds)
        images = None
        if self.multimodal and sample.images:
            fitted = prompt["multi_modal_data"]["image"]
            images = process_images(fitted if isinstance(fitted, list) else [fitted], self.renderer)
        await self._open.wait()
        if self.refusing:
            raise StaleWeights(self.replica_id, self.refusing)
        if self.version < min_version:
            raise StaleWeights(self.replica_id, f"it holds version {self.version}; the request needs {min_version}")
        self._inflight += 1
        self._idle.clear()
        version = self.version
        try:
            # FINAL_ONLY: one output holding all n completions (streamed outputs of n > 1 arrive per child).
            params = SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                max_tokens=sampling.max_tokens,
                logprobs=0,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            final = None
            async for out in self.engine.generate(prompt, params, request_id=uuid.uuid4().hex):
                final = out
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
        if final is None or len(final.outputs) != params.n:
            got = 0 if final is None else len(final.outputs)
            raise RuntimeError(f"vLLM returned {got} of {params.n} responses for sample {sample.id}")
        responses = [
            Response(
                text=c.text,
                token_ids=list(c.token_ids),
                logprobs=[float(step[tok].logprob) for tok, step in zip(c.token_ids, c.logprobs or [], strict=False)],
                finish_reason=str(c.finish_reason),
            )
            for c in final.outputs
        ]
        return Rollout(
            sample=sample,
            responses=responses,
            version=version,
            replica=self.replica_id,
            prompt_token_ids=list(final.prompt_token_ids or []),
            images=images,
        )

    # -- pause / resume ------------------------------------------------------------------
    async def pause(self) -> None:
        """Closes the gate and returns once no request is in flight (queued requests wait, none is dropped)."""
        self._open.clear()
        await self._idle.wait()

    async def resume(self) -> None:
        self._open.set()

    @contextlib.asynccontextmanager
    async def paused(self):
        """One weight load at a time, with the gate closed: requests in flight finish first, on the old
        weights and tagged with the old version; requests that arrive meanwhile wait (none is dropped or
        aborted); the gate opens again whatever happened."""
        async with self._lock:
            await self.pause()
            try:
                yield
            finally:
                await self.resume()

    # -- weight sync ---------------------------------------------------------------------
    async def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            replica=self.replica_id,
            version=self.version,
            dtype=self.dtype,
            backend=self.backend,
            healthy=not self.engine.errored,
            refusing=self.refusing,
            sync_ranks=self.engine.vllm_config.parallel_config.world_size,
            pid=os.getpid(),
        )

    async def join_sync(self, ranks: dict[str, int], rendezvous: dict[str, Any]) -> JoinReply:
        """Joins the trainer's sync group at the (first) rank the controller gave this replica."""
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        from medix_ray.sync.sender import worker_init_info

        if self.replica_id not in ranks:
            return JoinReply(self.replica_id, joined=False)
        info = worker_init_info(rendezvous, ranks[self.replica_id])
        await self.engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info=info))
        return JoinReply(self.replica_id, joined=True, rank=ranks[self.replica_id])

    async def update_weights(self, update: BucketUpdate, members: list[str]) -> PushReply:
        """Pauses, receives the full weights through the transfer engine, and takes `version` only if every
        bucket checked and loaded on every worker; resumes either way.

        A rejected push (a bucket failed its digest check, a load failed, the group timed out) leaves
        the version unchanged and the replica refusing requests until a later push is accepted: the
        buckets before the failure are already loaded. A replica that is not among `members` (it
        started after the group formed) does nothing."""
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        if self.replica_id not in members:
            return PushReply(self.replica_id, skipped=True, version=self.version)
        version = update.version
        start = time.monotonic()
        async with self.paused():
            try:
                request = WeightTransferUpdateRequest(update_info=update.update_info())
                workers = await self._receive_push(request, version)
                failed = [w.error or "the push did not complete" for w in workers if not w.ok]
                error = f"weight push to version {version} was rejected: {failed[0]}" if failed else ""
            except Exception as exc:  # noqa: BLE001 - any failure of the protocol rejects the push
                workers, error = [], f"weight push to version {version} failed: {type(exc).__name__}: {exc}"
            except BaseException:  # cancelled mid-load: the weights may be mixed, so refuse until healed
                self.refusing = f"weight push to version {version} was cancelled; it keeps version {self.version}"
                raise
            if error:
                self.refusing = f"{error}; it keeps version {self.version} and may hold mixed weights"
                logger.error("rollout replica %s: %s", self.replica_id, self.refusing)
            else:
                self.version, self.refusing = version, ""
        return PushReply(
            self.replica_id,
            ok=not error,
            version=self.version,
            seconds=time.monotonic() - start,
            error=error,
            workers=workers,
        )

    async def _receive_push(self, request: Any, version: int) -> list[ReceiveReport]:
        """Runs one session of vLLM's protocol; returns every worker's receive report for `version`."""
        await self.engine.start_weight_update()
        await self.engine.update_weights(request)  # our engine records a bad push instead of raising
        await self.engine.finish_weight_update()  # always: it resets vLLM's layerwise reload state
        await self.engine.reset_prefix_cache()
        reports = await self.engine.collective_rpc("medix_sync_report")
        missing = [i for i, r in enumerate(reports) if r is None or r["version"] != version]
        if missing:
            raise RuntimeError(f"vLLM workers {missing} report no receive for version {version}")
        return [ReceiveReport(**r) for r in reports]

    async def apply(self, fn: Any, *args: Any) -> Any:
        """Returns `await fn(self, *args)`: runs a function on this replica (Serve handles only, not HTTP).
        The extension point of benchmarks and tools (bench/weight_sync.py's object-store baseline)."""
        return await fn(self, *args)

    async def fingerprint(self) -> Fingerprint:
        """Returns a digest of the engine's parameters as it holds them (identical across in-sync replicas)."""
        digests = await self.engine.collective_rpc("medix_weight_fingerprint")
        return Fingerprint(self.replica_id, self.version, digests[0])

    def check_health(self) -> None:
        # A replica refusing after a rejected push stays healthy: the next accepted push heals it.
        if self.engine.errored:
            raise RuntimeError(f"vLLM engine of rollout replica {self.replica_id} died")

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def build_rollout_app(
    cfg: MedixConfig, model_path: str, deployment: type[RolloutDeployment] = RolloutDeployment
) -> serve.Application:
    """Returns the rollout deployment (`deployment`, a RolloutDeployment or subclass) with `rollout.replicas`
    replicas."""
    r = cfg.rollout
    gpus = r.num_gpus_per_replica if on_gpu() else 0
    return (
        serve.deployment(deployment)
        .options(
            name="rollout",
            num_replicas=r.replicas,
            max_ongoing_requests=1024,
            health_check_period_s=5,
            ray_actor_options={"num_cpus": r.num_cpus_per_replica, "num_gpus": gpus},
        )
        .bind(cfg, model_path)
    )
