"""The learner side of weight sync, as the sync package's own endpoint on every learner rank.

The learner worker (medix_ray/learner/worker.py) holds one `LearnerSyncEndpoint` and exposes it as
`sync`; the coordinator reaches its methods through the learner group's typed calls
(medix_ray/learner/calls.py):

    opened = group.open_sync(SyncOpen("gloo", 64 << 20, world_size=3, dtype="bfloat16"))   # SyncOpened
    pending = group.connect_sync()                   # returns once every rollout worker has joined
    sent = group.push_weights(SyncPush(specs, checksum=True)).first()                    # SentPush

Every rank runs every call (ZeRO-3 gathers are collectives); only rank 0 transmits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from medix_ray.sync.buckets import ParamSpec
from medix_ray.sync.sender import SentPush


@dataclass(frozen=True)
class SyncOpen:
    """Opens a sync group of the learner (rank 0) and `world_size - 1` rollout workers."""

    backend: str
    bucket_bytes: int
    world_size: int
    dtype: str  # the dtype the rollout engines receive
    timeout_s: float = 600.0


@dataclass(frozen=True)
class SyncOpened:
    rendezvous: dict[str, Any] | None  # rank 0 only: where the rollout workers join
    backend: str
    specs: list[list[Any]]  # [name, dtype, shape] of every parameter


@dataclass(frozen=True)
class SyncPush:
    specs: list[list[Any]]
    checksum: bool


class LearnerSyncEndpoint:
    """Owns the weight sender of one learner rank; `params(names)` yields the full parameters in order
    (a collective under ZeRO-3), `specs(dtype)` lists them."""

    def __init__(
        self,
        rank: int,
        params: Callable[[list[str]], Iterator[tuple[str, torch.Tensor]]],
        specs: Callable[[str], list[list[Any]]],
    ):
        self.rank = rank
        self._params = params
        self._specs = specs
        self._sender = None

    def open(self, request: SyncOpen) -> SyncOpened:
        from medix_ray.sync.sender import WeightSender

        self.close()
        self._sender = WeightSender(request.backend, request.bucket_bytes, request.timeout_s)
        return SyncOpened(
            rendezvous=self._sender.open(request.world_size) if self.rank == 0 else None,
            backend=self._sender.backend,
            specs=self._specs(request.dtype),
        )

    def connect(self) -> bool:
        if self._sender is None:
            raise RuntimeError("sync.connect before sync.open")
        if self.rank == 0:
            self._sender.connect()
        return True

    def push(self, request: SyncPush) -> SentPush:
        """Sends the current parameters; returns what was sent (bytes, buckets, checksum)."""
        if self._sender is None:
            raise RuntimeError("sync.push before sync.open")
        specs = [ParamSpec(n, d, tuple(shape)) for n, d, shape in request.specs]
        return self._sender.send(self._params([sp.name for sp in specs]), specs, checksum=request.checksum)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
