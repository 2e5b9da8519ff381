"""The rollout side of one push: receive each bucket, check its digest, only then load it.

For every bucket of the plan the trainer broadcasts the bytes, then (with checksums) the bucket's
digest (buckets.bucket_digest, computed by the trainer on its device). `receive_push` checks each
bucket against that digest right after receiving it and before handing it to the model's loader.
The first bucket that fails its check, or whose load raises, stops all further loading; the rest
of the push is still received (and dropped) so that the collective completes for the trainer and
every other replica, and the group stays usable. The report says what happened; the replica then
takes the new version only if the report is `ok`, and otherwise refuses requests until a later
push is accepted: buckets before the failing one are already in the model (a layer loads as soon
as its tensors have arrived), so the weights may be mixed.

    report = receive_push(group, update, load=model.load_weights, device="cpu")
    report.ok, report.error            # True, "" when every bucket checked and loaded

The tests inject faults from outside (tests/sync/faults.py wraps a replica's group and loader);
nothing here knows about them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from medix_ray.sync.buckets import ParamSpec, bucket_digest, bucket_nbytes, plan_buckets, push_digest, unpack


@dataclass
class BucketUpdate:
    """What a replica needs to receive one push (the update_info of vLLM's protocol)."""

    specs: list[list[Any]]  # [name, dtype name, shape] per parameter, in send order
    bucket_bytes: int
    checksum: bool = True
    version: int = 0

    def update_info(self) -> dict[str, Any]:
        """Returns the push as vLLM's weight-transfer protocol carries it (`update_info`, parsed back into a
        BucketUpdate by the rollout workers' engine: sync/engine.py)."""
        return {
            "specs": self.specs,
            "bucket_bytes": self.bucket_bytes,
            "checksum": self.checksum,
            "version": self.version,
        }

    def plan(self) -> list[list[ParamSpec]]:
        specs = [ParamSpec(name, dtype, tuple(shape)) for name, dtype, shape in self.specs]
        return plan_buckets(specs, self.bucket_bytes)


@dataclass
class ReceiveReport:
    """What one vLLM worker received and loaded in one push."""

    version: int
    buckets: int  # in the plan
    received: int  # buckets received (all of them unless the group failed)
    verified: int  # buckets whose digest equals the trainer's (0 without checksums)
    loaded: int  # buckets handed to the model's loader
    bytes: int
    tensors: int
    checksum: str | None = None  # push_digest of the digests this worker computed (None without checksums)
    error: str = ""  # why the push was rejected; "" when accepted

    @property
    def ok(self) -> bool:
        return not self.error and self.loaded == self.buckets

    def to_wire(self) -> dict[str, Any]:
        """Returns the report as plain values: vLLM's collective_rpc carries it from the worker process
        (msgpack) and the replica rebuilds it with `ReceiveReport(**wire)`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Fingerprint:
    """A digest of a replica's parameters as its engine holds them (identical across in-sync replicas)."""

    replica: str
    version: int
    digest: str


@dataclass(frozen=True)
class JoinReply:
    """A replica's answer to join_sync: whether it joined the group, at which first rank."""

    replica: str
    joined: bool
    rank: int = -1


@dataclass
class PushReply:
    """A replica's answer to update_weights: whether it took the new version, and what it now serves."""

    replica: str
    ok: bool = False
    skipped: bool = False  # the replica is not in the sync group yet (it started after the group formed)
    version: int = 0  # the version it serves now (unchanged when the push was rejected)
    seconds: float = 0.0
    error: str = ""
    workers: list[ReceiveReport] = field(default_factory=list)

    @property
    def checksum(self) -> str | None:
        sums = {w.checksum for w in self.workers}
        return sums.pop() if len(sums) == 1 else None


def receive_push(
    group: Any,
    update: BucketUpdate,
    load: Callable[[list[tuple[str, torch.Tensor]]], Any],
    device: Any = "cpu",
) -> ReceiveReport:
    """Receives every bucket of one push from `group` (rank 0 sends); loads each one only after its check.

    Never raises for a bad bucket or a failed load: it records the first failure in the report and
    receives the rest of the push without loading it. A failure of the group itself (a timeout)
    ends the receive early; the report says so, and the trainer's side fails as well."""
    plan = update.plan()
    report = ReceiveReport(
        version=update.version,
        buckets=len(plan),
        received=0,
        verified=0,
        loaded=0,
        bytes=0,
        tensors=sum(len(b) for b in plan),
    )
    digests: list[torch.Tensor] = []
    for k, bucket in enumerate(plan):
        # A fresh buffer per bucket: the layerwise reload may hold views into it until a layer is complete.
        flat = torch.empty(bucket_nbytes(bucket), dtype=torch.uint8, device=device)
        expected = torch.empty(2, dtype=torch.int64, device=device) if update.checksum else None
        try:
            group.broadcast(flat)
            if expected is not None:
                group.broadcast(expected)
        except Exception as exc:  # noqa: BLE001 - the group failed (timeout, dead peer): stop here
            report.error = report.error or f"bucket {k} of {len(plan)} was not received: {exc}"
            break
        report.received += 1
        report.bytes += flat.numel()
        if report.error:
            continue  # an earlier bucket failed: drain the rest of the push, load nothing more
        if expected is not None:
            got = bucket_digest(flat)
            digests.append(got)
            if not torch.equal(got, expected):
                report.error = (
                    f"bucket {k} of {len(plan)} ({bucket[0].name} ... {bucket[-1].name}) arrived with digest "
                    f"{got.tolist()}; the trainer sent {expected.tolist()}"
                )
                continue
            report.verified += 1
        try:
            load(unpack(bucket, flat))
        except Exception as exc:  # noqa: BLE001 - any loader failure rejects the push
            report.error = f"loading bucket {k} of {len(plan)} failed: {type(exc).__name__}: {exc}"
            continue
        report.loaded += 1
    if update.checksum and not report.error:
        report.checksum = push_digest(digests)
    return report
