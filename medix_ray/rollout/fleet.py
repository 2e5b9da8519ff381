"""The controller's client of the rollout deployment: fan-out of samples, retries, replica roster.

    fleet = RolloutFleet(handle)
    rollouts = fleet.generate(samples, {"n": 4, "max_tokens": 96})   # one Rollout per sample, in order
    fleet.replicas()                                                  # [{"replica", "version", ...}, ...]

A request that fails because its replica died (killed, OOM) or refused it (stale weights: it
restarted, or its last weight push was rejected) is sent again, up to `attempts` times; Serve
routes it to a live replica. Retries are counted in `fleet.retries`. Before retrying a refused
request the fleet calls `on_stale` (the controller pushes the weights again), once per refusal
wave: requests sent before that push do not trigger another one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medix_ray.data.schema import Sample

STALE = "stale weights:"  # the marker of the rollout deployment's refusal (deployments/rollout_app.py)

logger = logging.getLogger(__name__)


@dataclass
class Response:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Rollout:
    """The n responses one replica produced for one sample, and the policy version it held."""

    sample: Sample
    responses: list[Response]
    version: int
    replica: str
    prompt_token_ids: list[int]


class RolloutError(RuntimeError):
    """A rollout request failed on every attempt; the message names the sample and the last error."""


class RolloutFleet:
    def __init__(self, handle: Any, attempts: int = 3, timeout_s: float = 1800.0):
        self.handle = handle
        self.on_stale: Any = None  # called before retrying a request a stale replica refused (the controller syncs)
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.retries = 0
        self.resyncs = 0  # on_stale calls so far

    def generate(self, samples: Sequence[Sample], sampling: dict[str, Any], min_version: int = 0) -> list[Rollout]:
        """Returns one Rollout per sample, in order (requests run concurrently across replicas); every
        response comes from a replica holding at least policy version `min_version`."""
        pending = {i: self.handle.generate.remote(s, sampling, min_version) for i, s in enumerate(samples)}
        sent_at = dict.fromkeys(pending, self.resyncs)  # the resyncs done before each request was sent
        results: dict[int, dict[str, Any]] = {}
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
                    if not _retryable(exc):
                        raise RolloutError(f"rollout of sample {samples[i].id} failed: {exc}") from exc
                    if tries[i] >= self.attempts:
                        raise RolloutError(
                            f"rollout of sample {samples[i].id} failed {tries[i]} times; last error: {exc}"
                        ) from exc
                    tries[i] += 1
                    self.retries += 1
                    logger.warning("rollout of sample %s failed (%s); retrying", samples[i].id, exc)
                    if STALE in str(exc) and self.on_stale is not None and sent_at[i] == self.resyncs:
                        self.resyncs += 1
                        self.on_stale()
                    pending[i] = self.handle.generate.remote(samples[i], sampling, min_version)
                    sent_at[i] = self.resyncs
        return [_rollout(samples[i], results[i]) for i in range(len(samples))]

    def replicas(self) -> list[dict[str, Any]]:
        """Returns every running replica's id, policy version, dtype and health."""
        return list(self.handle.broadcast("info").results())

    def broadcast(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return list(self.handle.broadcast(method, *args, **kwargs).results())


def _retryable(exc: BaseException) -> bool:
    """Returns whether a failed request may succeed elsewhere: its replica died, or was stale or unhealthy."""
    import ray.exceptions

    if isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        return True
    text = str(exc)
    return STALE in text or "is unhealthy" in text or "EngineDeadError" in text or "EngineGenerateError" in text


def _rollout(sample: Sample, reply: dict[str, Any]) -> Rollout:
    return Rollout(
        sample=sample,
        responses=[Response(r["text"], r["token_ids"], r["logprobs"], r["finish_reason"]) for r in reply["responses"]],
        version=reply["version"],
        replica=reply["replica"],
        prompt_token_ids=reply["prompt_token_ids"],
    )
