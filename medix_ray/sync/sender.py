"""The trainer side of weight sync: learner rank 0 broadcasts the policy to every rollout worker.

One interface, two backends:
- `gloo` (CPU): a ProcessGroupGloo over a TCPStore that rank 0 hosts; the rollout workers run the
  gloo engine of gloo_engine.py.
- `nccl` (GPU): vLLM's PyNccl communicator (`nccl_common.trainer_init`); the rollout workers run
  vLLM's built-in `nccl` engine with packed buffers, so both ends use vLLM's own packing.

Neither touches the default (DeepSpeed) process group. Every learner rank calls `send` with the
same parameter stream (ZeRO-3 gathers are collectives); only rank 0 transmits.

    sender = WeightSender("gloo", bucket_bytes=64 << 20)
    rendezvous = sender.open(world_size=1 + replicas)   # rank 0: host and port for the workers
    sender.connect()                                     # returns once every worker has joined
    report = sender.send(named_params(), specs, checksum=True)
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from medix_ray.sync.buckets import ParamSpec, pack, plan_buckets


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


def worker_init_info(backend: str, rendezvous: dict[str, Any], rank: int, timeout_s: float = 600.0) -> dict[str, Any]:
    """Returns the init_info that the rollout worker of sync rank `rank` passes to init_weight_transfer_engine."""
    if backend == "gloo":
        return {**rendezvous, "rank": rank, "timeout_s": timeout_s}
    # vLLM's nccl engine: its rank is rank_offset + its own worker rank (0 without tensor parallelism).
    return {**rendezvous, "rank_offset": rank, "packed": True}


class WeightSender:
    def __init__(self, backend: str, bucket_bytes: int, timeout_s: float = 600.0):
        self.backend = resolve_backend(backend)
        self.bucket_bytes = bucket_bytes
        self.timeout_s = timeout_s
        self.rendezvous: dict[str, Any] | None = None
        self.group = None
        self._store = None

    def open(self, world_size: int) -> dict[str, Any]:
        """Picks the rendezvous (this node, a free port) for a group of `world_size` ranks."""
        self.close()
        self.rendezvous = {"master_address": node_address(), "master_port": free_port(), "world_size": world_size}
        return dict(self.rendezvous)

    def connect(self) -> None:
        """Joins the group as rank 0; blocks until every worker has joined."""
        if self.rendezvous is None:
            raise RuntimeError("open() the sync group first")
        r = self.rendezvous
        if self.backend == "gloo":
            from medix_ray.sync.gloo_engine import open_gloo_group

            self._store, self.group = open_gloo_group(
                r["master_address"], r["master_port"], 0, r["world_size"], self.timeout_s
            )
        else:
            from vllm.distributed.weight_transfer.nccl_common import trainer_init

            self.group = trainer_init(r, rank=0)

    def send(
        self, named: Iterable[tuple[str, torch.Tensor]], specs: Sequence[ParamSpec], *, checksum: bool = False
    ) -> dict[str, Any]:
        """Broadcasts the tensors (in `specs` order, cast to the spec dtypes); returns bytes, seconds, checksum.

        `named` is consumed on every learner rank (it may gather ZeRO-3 shards); only a rank that called
        `connect` transmits.
        """
        start = time.monotonic()
        digest = hashlib.blake2b(digest_size=16) if checksum else None
        sent = 0
        it = iter(named)
        if self.backend == "nccl" and self.group is not None:
            return self._send_nccl(it, specs, start)
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
            if digest is not None:
                digest.update(memoryview(flat.numpy()))
            self.group.broadcast(flat, 0).wait()
            sent += flat.numel()
        return {
            "bytes": sent,
            "seconds": time.monotonic() - start,
            "checksum": digest.hexdigest() if digest is not None else None,
        }

    def _send_nccl(self, it, specs: Sequence[ParamSpec], start: float) -> dict[str, Any]:
        from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer

        dtypes = {s.name: s.torch_dtype for s in specs}
        sent = sum(s.nbytes for s in specs)
        packed_nccl_broadcast_producer(
            iterator=it,
            group=self.group,
            src=0,
            post_iter_func=lambda item: item[1].to(dtypes[item[0]]),
        )
        torch.cuda.synchronize()
        return {"bytes": sent, "seconds": time.monotonic() - start, "checksum": None}

    def close(self) -> None:
        if self.group is not None and self.backend == "nccl":
            destroy = getattr(self.group, "destroy", None)
            if callable(destroy):
                destroy()
        self.group = None
        self._store = None
        self.rendezvous = None
