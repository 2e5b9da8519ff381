"""The trainer's client of the rollout deployment: fan-out of samples, retries, replica roster.

    fleet = RolloutFleet(handle)
    rollouts = fleet.generate(samples, Sampling(n=4, max_tokens=96))   # one Rollout per sample, in order
    fleet.replicas()                                                    # [ReplicaInfo, ...]

A request that fails because its replica died (killed, OOM, its engine died) or refused it
(`StaleWeights`: it restarted, or its last weight push was rejected) is sent again, up to
`attempts` times; Serve routes it to a live replica. Retries are counted in `fleet.retries`.
Before retrying a refused request the fleet calls `on_stale`, which the weight sync sets to its
`resync` (medix_ray/sync/coordinator.py), once per refusal wave: requests sent before that push do
not trigger another one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from medix_ray.data.schema import Sample
from medix_ray.trajectory import ReplicaInfo, ReplicaUnhealthy, Rollout, Sampling, StaleWeights

logger = logging.getLogger(__name__)


class RolloutError(RuntimeError):
    """A rollout request failed on every attempt; the message names the sample and the last error."""


class RolloutFleet:
    def __init__(self, handle: Any, attempts: int = 3, timeout_s: float = 1800.0):
        self.handle = handle
        self.on_stale: Callable[[], Any] | None = None  # the weight sync's resync (set by WeightSync)
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.retries = 0
        self.resyncs = 0  # on_stale calls so far

    def generate(self, samples: Sequence[Sample], sampling: Sampling, min_version: int = 0) -> list[Rollout]:
        """Returns one Rollout per sample, in order (requests run concurrently across replicas); every
        response comes from a replica holding at least policy version `min_version`."""
        pending = {i: self.handle.generate.remote(s, sampling, min_version) for i, s in enumerate(samples)}
        sent_at = dict.fromkeys(pending, self.resyncs)  # the resyncs done before each request was sent
        results: dict[int, Rollout] = {}
        tries = dict.fromkeys(pending, 1)
        deadline = time.monotonic() + self.timeout_s
        while pending:
            for i, response in list(pending.items()):
                try:
                    results[i] = response.result(timeout_s=max(deadline - time.monotonic(), 1.0))
                    del pending[i]
                except TimeoutError as exc:
                    raise RolloutError(f"rollout of sample {samples[i].id} took over {self.timeout_s:.0f} s") from exc
                except Exception as exc:  # noqa: BLE001 - replica death arrives as several Ray/Serve error types
                    if not retryable(exc):
                        raise RolloutError(f"rollout of sample {samples[i].id} failed: {exc}") from exc
                    if tries[i] >= self.attempts:
                        raise RolloutError(
                            f"rollout of sample {samples[i].id} failed {tries[i]} times; last error: {exc}"
                        ) from exc
                    tries[i] += 1
                    self.retries += 1
                    logger.warning("rollout of sample %s failed (%s); retrying", samples[i].id, exc)
                    if isinstance(exc, StaleWeights) and self.on_stale is not None and sent_at[i] == self.resyncs:
                        self.resyncs += 1
                        self.on_stale()
                    pending[i] = self.handle.generate.remote(samples[i], sampling, min_version)
                    sent_at[i] = self.resyncs
        return [results[i] for i in range(len(samples))]

    def replicas(self) -> list[ReplicaInfo]:
        """Returns every running replica's id, policy version, dtype and health."""
        return list(self.handle.broadcast("info").results())

    def broadcast(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Calls `method` on every running replica; returns their replies."""
        return list(self.handle.broadcast(method, *args, **kwargs).results())


def retryable(exc: BaseException) -> bool:
    """Returns whether a failed request may succeed elsewhere: its replica died, or was stale or unhealthy.

    Ray re-raises a replica's exception as an instance of the original class, so the types are checked
    directly; vLLM's own engine errors are matched by their types as well."""
    import ray.exceptions

    if isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        return True
    if isinstance(exc, (StaleWeights, ReplicaUnhealthy)):
        return True
    # An engine error can only arrive where its module was loaded to unpickle it: no need to import vLLM here.
    engine_errors = sys.modules.get("vllm.v1.engine.exceptions")
    if engine_errors is None:
        return False
    return isinstance(exc, (engine_errors.EngineDeadError, engine_errors.EngineGenerateError))
