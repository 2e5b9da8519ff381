"""The trainer side of weight sync: learner rank 0 broadcasts the policy to every rollout worker.

One protocol on both backends (transport.py: gloo on CPU, NCCL on GPU): the parameters in byte
buckets planned from their metadata (buckets.py), each bucket followed, with checksums, by its
digest, computed on the bucket's own device (the GPU under NCCL: no host copy of the weights).
The rollout workers run the engine of engine.py, which checks every bucket before loading it.

Neither touches the default (DeepSpeed) process group. Every learner rank calls `send` with the
same parameter stream (ZeRO-3 gathers are collectives); only rank 0 transmits.

    sender = WeightSender("gloo", bucket_bytes=64 << 20, timeout_s=600)
    rendezvous = sender.open(world_size=1 + replicas)   # rank 0: host, port and timeout for the workers
    sender.connect()                                     # returns once every worker has joined
    report = sender.send(named_params(), specs, checksum=True)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medix_ray.sync.buckets import ParamSpec, bucket_digest, pack, plan_buckets, push_digest
from medix_ray.sync.transport import open_group


@dataclass(frozen=True)
class SentPush:
    """What one learner rank sent in a push (only rank 0 transmits: the others report 0 bytes)."""

    bytes: int
    buckets: int
    seconds: float
    checksum: str | None  # push_digest of the bucket digests (None without checksums, or not sending)


def resolve_backend(backend: str) -> str:
    """Returns gloo or nccl for a config value (auto: nccl when CUDA is available)."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"unknown weight sync backend {backend!r}; expected auto, gloo or nccl")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("sync.backend=nccl needs CUDA on the learner; use gloo (or auto) on CPU")
    return backend


def node_address() -> str:
    """Returns this node's IP address as Ray sees it (127.0.0.1 outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside a Ray worker
        pass
    return "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def worker_init_info(rendezvous: dict[str, Any], rank: int) -> dict[str, Any]:
    """Returns the init_info that the rollout replica whose first sync rank is `rank` passes to
    init_weight_transfer_engine (its vLLM workers take `rank`, `rank + 1`, ... under tensor parallelism)."""
    return {**rendezvous, "rank": rank}


class WeightSender:
    def __init__(self, backend: str, bucket_bytes: int, timeout_s: float = 600.0):
        self.backend = resolve_backend(backend)
        self.bucket_bytes = bucket_bytes
        self.timeout_s = timeout_s
        self.rendezvous: dict[str, Any] | None = None
        self.group = None

    def open(self, world_size: int) -> dict[str, Any]:
        """Picks the rendezvous (this node, a free port, the timeout) for a group of `world_size` ranks."""
        self.close()
        self.rendezvous = {
            "master_address": node_address(),
            "master_port": free_port(),
            "world_size": world_size,
            "timeout_s": self.timeout_s,
        }
        return dict(self.rendezvous)

    def connect(self) -> None:
        """Joins the group as rank 0; blocks until every worker has joined (or raises SyncTimeout)."""
        if self.rendezvous is None:
            raise RuntimeError("open() the sync group first")
        r = self.rendezvous
        self.group = open_group(self.backend, r["master_address"], r["master_port"], 0, r["world_size"], self.timeout_s)

    def send(
        self, named: Iterable[tuple[str, torch.Tensor]], specs: Sequence[ParamSpec], *, checksum: bool = True
    ) -> SentPush:
        """Broadcasts the tensors (in `specs` order, cast to the spec dtypes), each bucket followed by its
        digest when `checksum`; returns what was sent.

        `named` is consumed on every learner rank (it may gather ZeRO-3 shards); only a rank that called
        `connect` transmits. Buckets are packed on the tensors' device.
        """
        start = time.monotonic()
        digests: list[torch.Tensor] = []
        sent = 0
        buckets = 0
        it = iter(named)
        for bucket in plan_buckets(specs, self.bucket_bytes):
            tensors = []
            for spec in bucket:
                name, tensor = next(it)
                if name != spec.name:
                    raise RuntimeError(f"weight stream yielded {name!r} where the plan expects {spec.name!r}")
                tensors.append(tensor)
            if self.group is None:
                continue  # a non-sending rank: it took part in the gathers only
            flat = pack(bucket, tensors)
            digest = bucket_digest(flat) if checksum else None
            self.group.broadcast(flat)
            if digest is not None:
                self.group.broadcast(digest)
                digests.append(digest)
            sent += flat.numel()
            buckets += 1
        return SentPush(
            bytes=sent,
            buckets=buckets,
            seconds=time.monotonic() - start,
            checksum=push_digest(digests) if checksum and self.group is not None else None,
        )

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = None
        self.rendezvous = None
