"""The rollout fleet: vLLM AsyncLLM engines as a Ray Serve deployment with R replicas.

A request carries one sample (question text and image references; images are decoded and
processed inside the replica), n and the sampling parameters. The reply carries, for each of the
n responses, the token ids, the per-token log-probs of the sampled tokens, the finish reason, and
the policy version that produced it, plus the replica's id.

Weight updates use vLLM's weight-transfer protocol (init_weight_transfer_engine →
start_weight_update → update_weights → finish_weight_update) with the `nccl` engine on GPU and our
`gloo` engine on CPU (medix_ray/sync). Around an update the replica pauses: new requests wait at
a gate, the update starts once the requests in flight have finished, and the gate reopens with
the new version. No request is lost, and none is answered by a half-updated model: a replica
whose update failed reports itself unhealthy, and Serve replaces it (the replacement rejoins the
sync group and receives the current weights at the next sync).

    handle = serve.run(build_rollout_app(cfg), name="medix-rollout", route_prefix=None)
    reply = handle.generate.remote(sample, {"n": 4, "max_tokens": 96}).result()
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

from ray import serve

from medix_ray.config import MedixConfig
from medix_ray.data.prompts import PromptStyle, is_multimodal
from medix_ray.data.schema import Sample
from medix_ray.rollout.fleet import STALE
from medix_ray.rollout.vllm_engine import engine_kwargs, load_prompt_renderer, on_gpu, set_cpu_env, vllm_prompt

logger = logging.getLogger(__name__)

WORKER_EXTENSION = "medix_ray.sync.worker_ext.RolloutWorkerExtension"
SAMPLING_KEYS = ("n", "temperature", "top_p", "top_k", "max_tokens")


class RolloutDeployment:
    """One vLLM engine; `generate` for rollouts, `join_sync` / `update_weights` for weight sync."""

    def __init__(self, cfg: MedixConfig, model_path: str):
        set_cpu_env(cfg.rollout)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from medix_ray.sync.sender import resolve_backend

        self.cfg = cfg
        self.style = PromptStyle.from_config(cfg.data)
        self.renderer = load_prompt_renderer(model_path)
        self.multimodal = is_multimodal(self.renderer)
        self.backend = resolve_backend(cfg.sync.backend)
        kwargs = engine_kwargs(model_path, cfg.rollout, self.multimodal)
        start = time.monotonic()
        self.engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                **kwargs,
                worker_extension_cls=WORKER_EXTENSION,
                weight_transfer_config={"backend": self.backend},
            )
        )
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - constructed outside Serve (tests)
            self.replica_id = uuid.uuid4().hex[:8]
        self.version = 0
        self.dtype = str(self.engine.model_config.dtype).removeprefix("torch.")
        self.healthy = True
        self.failure = ""
        self._open = asyncio.Event()
        self._open.set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        logger.info("rollout replica %s up in %.1f s", self.replica_id, time.monotonic() - start)

    # -- rollouts ------------------------------------------------------------------------
    async def generate(self, sample: Sample, sampling: dict[str, Any], min_version: int = 0) -> dict[str, Any]:
        """Returns the n responses to one sample with token ids, log-probs, finish reasons and version.

        A replica that holds an older policy than `min_version` (it restarted and has not been synced
        yet) refuses with a "stale weights" error; the fleet then has it synced and asks again."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        unknown = set(sampling) - set(SAMPLING_KEYS)
        if unknown:
            raise ValueError(f"unknown sampling parameters {sorted(unknown)}; expected {SAMPLING_KEYS}")
        if not self.healthy:
            raise RuntimeError(f"rollout replica {self.replica_id} is unhealthy: {self.failure}")
        prompt = vllm_prompt(sample, self.renderer, self.style)  # decode images before waiting at the gate
        await self._open.wait()
        if self.version < min_version:
            raise RuntimeError(
                f"{STALE} replica {self.replica_id} holds version {self.version}; the request needs {min_version}"
            )
        self._inflight += 1
        self._idle.clear()
        version = self.version
        try:
            # FINAL_ONLY: one output holding all n completions (streamed outputs of n > 1 arrive per child).
            params = SamplingParams(
                **{k: v for k, v in sampling.items() if v is not None},
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
        responses = []
        for c in final.outputs:
            logprobs = [float(step[tok].logprob) for tok, step in zip(c.token_ids, c.logprobs or [], strict=False)]
            responses.append(
                {
                    "text": c.text,
                    "token_ids": list(c.token_ids),
                    "logprobs": logprobs,
                    "finish_reason": str(c.finish_reason),
                }
            )
        return {
            "sample_id": sample.id,
            "replica": self.replica_id,
            "version": version,
            "prompt_token_ids": list(final.prompt_token_ids or []),
            "responses": responses,
        }

    # -- pause / resume ------------------------------------------------------------------
    async def pause(self) -> None:
        """Closes the gate and returns once no request is in flight (queued requests wait, none is dropped)."""
        self._open.clear()
        await self._idle.wait()

    async def resume(self) -> None:
        self._open.set()

    # -- weight sync ---------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        return {
            "replica": self.replica_id,
            "version": self.version,
            "dtype": self.dtype,
            "backend": self.backend,
            "healthy": self.healthy,
            "pid": os.getpid(),
        }

    async def join_sync(self, ranks: dict[str, int], rendezvous: dict[str, Any]) -> dict[str, Any]:
        """Joins the trainer's sync group at the rank the controller gave this replica."""
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        from medix_ray.sync.sender import worker_init_info

        if self.replica_id not in ranks:
            return {"replica": self.replica_id, "joined": False}
        info = worker_init_info(self.backend, rendezvous, ranks[self.replica_id])
        await self.engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info=info))
        return {"replica": self.replica_id, "joined": True, "rank": ranks[self.replica_id]}

    async def update_weights(self, update_info: dict[str, Any], version: int, members: list[str]) -> dict[str, Any]:
        """Pauses, receives the full weights through the transfer engine, bumps the version, resumes.

        A replica that is not among `members` (it started after the group formed) does nothing."""
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        if self.replica_id not in members:
            return {"replica": self.replica_id, "skipped": True}
        async with self._lock:
            start = time.monotonic()
            await self.pause()
            try:
                await self.engine.start_weight_update()
                await self.engine.update_weights(WeightTransferUpdateRequest(update_info=update_info))
                await self.engine.finish_weight_update()
                await self.engine.reset_prefix_cache()
                report = (await self.engine.collective_rpc("medix_sync_report"))[0] if self.backend == "gloo" else {}
                self.version = version
            except BaseException as exc:
                # The weights may be half-updated: never answer from them. Serve restarts unhealthy replicas.
                self.healthy = False
                self.failure = f"weight update to version {version} failed: {type(exc).__name__}: {exc}"
                logger.exception("rollout replica %s: %s", self.replica_id, self.failure)
                raise
            finally:
                await self.resume()
            return {"replica": self.replica_id, "version": version, "seconds": time.monotonic() - start, **report}

    async def load_from_object_store(self, refs: list[Any], version: int) -> dict[str, Any]:
        """The baseline weight path of bench/weight_sync.py (the peers' pattern): one Ray object per
        tensor, fetched here and handed to the vLLM worker as safetensors bytes, tensor by tensor."""
        import ray
        from safetensors.torch import save

        async with self._lock:
            start = time.monotonic()
            await self.pause()
            try:
                await self.engine.collective_rpc("medix_begin_reload")
                for name, ref in refs:
                    tensor = await ref if isinstance(ref, ray.ObjectRef) else ref
                    await self.engine.collective_rpc("medix_load_safetensors", args=(save({name: tensor}),))
                await self.engine.collective_rpc("medix_end_reload")
                await self.engine.reset_prefix_cache()
                self.version = version
            finally:
                await self.resume()
            return {"replica": self.replica_id, "version": version, "seconds": time.monotonic() - start}

    async def fingerprint(self) -> dict[str, Any]:
        """Returns a digest of the engine's parameters as it holds them (identical across in-sync replicas)."""
        digests = await self.engine.collective_rpc("medix_weight_fingerprint")
        return {"replica": self.replica_id, "version": self.version, "fingerprint": digests[0]}

    def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError(self.failure)
        if self.engine.errored:
            raise RuntimeError(f"vLLM engine of rollout replica {self.replica_id} died")

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def build_rollout_app(cfg: MedixConfig, model_path: str) -> serve.Application:
    """Returns the rollout deployment with `rollout.replicas` replicas."""
    r = cfg.rollout
    gpus = r.num_gpus_per_replica if on_gpu() else 0
    env = {} if on_gpu() else {"VLLM_CPU_KVCACHE_SPACE": str(r.kv_cache_space_gib)}
    return (
        serve.deployment(RolloutDeployment)
        .options(
            name="rollout",
            num_replicas=r.replicas,
            max_ongoing_requests=1024,
            health_check_period_s=5,
            ray_actor_options={"num_cpus": r.num_cpus_per_replica, "num_gpus": gpus, "runtime_env": {"env_vars": env}},
        )
        .bind(cfg, model_path)
    )
