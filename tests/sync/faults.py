"""Fault injection for the weight-sync tests, kept out of the product: wrappers around a replica's sync group
and model loader, and a rollout deployment whose vLLM workers can be told to apply them on the next push.

    group = FlipBit(group, bucket=1)            # flips one bit of bucket 1's bytes as they arrive
    load = fail_loading(load, bucket=1)         # the loader raises on bucket 1 (a failure mid-load)

    handle = serve.run(build_rollout_app(cfg, path, deployment=FaultyRolloutDeployment), ...)
    fleet.broadcast("arm_fault", victim, "flip_bit", 1)   # the next push to `victim` meets the fault
"""

from __future__ import annotations

from typing import Any

import torch

from deployments.rollout_app import RolloutDeployment
from medix_ray.sync.worker_ext import RolloutWorkerExtension


class InjectedFault(RuntimeError):
    pass


class FlipBit:
    """A sync group whose receive flips one bit in the middle of bucket `bucket`'s bytes (uint8 payloads;
    the int64 digests that follow them pass untouched)."""

    def __init__(self, group: Any, bucket: int):
        self.group = group
        self.bucket = bucket
        self.buckets_seen = 0

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.group.broadcast(tensor)
        if tensor.dtype == torch.uint8:
            if self.buckets_seen == self.bucket:
                tensor[tensor.numel() // 2] ^= 1
            self.buckets_seen += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.group, name)


def fail_loading(load: Any, bucket: int) -> Any:
    """Returns a loader that loads buckets before `bucket` and raises on it."""
    calls = {"n": 0}

    def faulty(batch):
        if calls["n"] == bucket:
            raise InjectedFault(f"injected failure after loading {bucket} buckets")
        calls["n"] += 1
        return load(batch)

    return faulty


class FaultyWorkerExtension(RolloutWorkerExtension):
    """A vLLM worker that can arm one fault for its next push."""

    def medix_test_arm_fault(self, kind: str, bucket: int) -> None:
        engine = self.weight_transfer_engine
        if kind == "flip_bit":
            engine.group = FlipBit(engine.group, bucket)
            original = engine.receive_weights

            def once(update_info):  # the fault lasts one push
                try:
                    original(update_info)
                finally:
                    engine.group = engine.group.group
                    del engine.receive_weights

            engine.receive_weights = once
        elif kind == "fail_loading":
            model = engine.model
            model.load_weights = fail_loading(type(model).load_weights.__get__(model), bucket)
            original = engine.receive_weights

            def once(update_info):
                try:
                    original(update_info)
                finally:
                    del model.load_weights
                    del engine.receive_weights

            engine.receive_weights = once
        else:
            raise ValueError(f"unknown fault {kind!r}; expected flip_bit or fail_loading")


class FaultyRolloutDeployment(RolloutDeployment):
    worker_extension = "tests.sync.faults.FaultyWorkerExtension"

    async def arm_fault(self, replica: str, kind: str, bucket: int) -> bool:
        """Arms the fault on this replica's workers if it is `replica`; returns whether it did."""
        if replica != self.replica_id:
            return False
        await self.engine.collective_rpc("medix_test_arm_fault", args=(kind, bucket))
        return True
