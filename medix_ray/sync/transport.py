"""The broadcast groups weight sync runs on: gloo (CPU) or NCCL (GPU), each with a timeout on every call.

Both ends of a push open the same group (the trainer is rank 0, on its own rendezvous, apart from
DeepSpeed's process group) and call `broadcast` on the same tensors in the same order:

    group = open_group("gloo", "127.0.0.1", port, rank=0, world_size=3, timeout_s=60)
    group.broadcast(flat)        # rank 0 sends `flat`; every other rank receives into its own buffer
    group.close()

A call that does not complete within `timeout_s` (a peer died or hung) raises `SyncTimeout`:
- gloo: the process group's own timeout (the TCPStore rendezvous and every collective);
- NCCL: the rendezvous store's timeout, and a deadline on each broadcast, polled through a CUDA
  event on the host; past it the communicator is aborted (the group is unusable afterwards, and
  the coordinator forms a new one at the next push).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import torch


class SyncTimeout(TimeoutError):
    """A weight-sync collective did not complete in time; the message names the call and the limit."""


class GlooGroup:
    """A ProcessGroupGloo over a TCPStore that rank 0 hosts (not the default group)."""

    def __init__(self, address: str, port: int, rank: int, world_size: int, timeout_s: float):
        from torch.distributed import TCPStore

        self.timeout_s = timeout_s
        timeout = datetime.timedelta(seconds=timeout_s)
        try:
            self.store = TCPStore(
                address, port, world_size, is_master=rank == 0, timeout=timeout, wait_for_workers=False
            )
        except RuntimeError as exc:
            raise SyncTimeout(f"gloo weight-sync rendezvous at {address}:{port} failed: {exc}") from exc
        opts = torch.distributed.ProcessGroupGloo._Options()
        opts._timeout = timeout
        opts._devices = [torch.distributed.ProcessGroupGloo.create_default_device()]
        self.group = torch.distributed.ProcessGroupGloo(self.store, rank, world_size, opts)

    def broadcast(self, tensor: torch.Tensor) -> None:
        try:
            self.group.broadcast(tensor, 0).wait()
        except RuntimeError as exc:  # gloo reports its timeouts (and a dead peer) as RuntimeError
            raise SyncTimeout(
                f"gloo weight-sync broadcast of {tensor.numel()} elements failed "
                f"or took over {self.timeout_s:.0f} s: {exc}"
            ) from exc

    def close(self) -> None:
        self.group = None
        self.store = None


class NcclGroup:
    """vLLM's PyNccl communicator over a StatelessProcessGroup rendezvous, with a deadline per broadcast."""

    def __init__(self, address: str, port: int, rank: int, world_size: int, timeout_s: float, device: Any = None):
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup
        from vllm.utils.nccl import unpinned_nccl_env

        self.timeout_s = timeout_s
        device = torch.cuda.current_device() if device is None else device
        store = StatelessProcessGroup.create(
            host=address, port=port, rank=rank, world_size=world_size, store_timeout=max(int(timeout_s), 1)
        )
        with unpinned_nccl_env():
            self.comm = PyNcclCommunicator(store, device=device)

    def broadcast(self, tensor: torch.Tensor) -> None:
        if self.comm is None:
            raise SyncTimeout("the NCCL weight-sync group was aborted after an earlier timeout")
        stream = torch.cuda.current_stream()
        self.comm.broadcast(tensor, src=0, stream=stream)
        done = torch.cuda.Event()
        done.record(stream)
        deadline = time.monotonic() + self.timeout_s
        while not done.query():
            if time.monotonic() > deadline:
                self.close()  # ncclCommAbort: frees the stuck kernel; this group is unusable from now on
                raise SyncTimeout(
                    f"NCCL weight-sync broadcast of {tensor.numel()} elements took over {self.timeout_s:.0f} s"
                )
            time.sleep(0.0005)

    def close(self) -> None:
        comm, self.comm = getattr(self, "comm", None), None
        if comm is not None:
            comm.destroy()


def open_group(
    backend: str, address: str, port: int, rank: int, world_size: int, timeout_s: float, device: Any = None
) -> GlooGroup | NcclGroup:
    """Joins the weight-sync group at `rank`; returns once every rank has joined (or raises SyncTimeout)."""
    if timeout_s <= 0:
        raise ValueError(f"sync.timeout_s must be positive; got {timeout_s}")
    if backend == "gloo":
        return GlooGroup(address, port, rank, world_size, timeout_s)
    if backend == "nccl":
        return NcclGroup(address, port, rank, world_size, timeout_s, device)
    raise ValueError(f"unknown weight sync backend {backend!r}; expected gloo or nccl")
