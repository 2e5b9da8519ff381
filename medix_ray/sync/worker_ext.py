"""Methods added to every vLLM worker of the rollout engine (`worker_extension_cls`).

Importing this module inside the worker registers our weight-transfer engines (engine.py) before
the model loads. The extension adds read-only probes: the last push's receive report, and a
fingerprint of the engine's parameters.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from medix_ray.sync import engine

engine.register()


class RolloutWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def medix_sync_report(self) -> dict[str, Any] | None:
        """Returns the last push's ReceiveReport (receiver.py) as a dict; None before the first push."""
        report = getattr(getattr(self, "weight_transfer_engine", None), "last_report", None)
        return report.to_wire() if report is not None else None

    # -- the object-store baseline of bench/weight_sync.py (the peers' pattern): tensors arrive one
    #    by one as safetensors bytes (collective_rpc cannot carry tensors) between a layerwise
    #    reload's start and finish.
    def medix_begin_reload(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model_runner.model)

    def medix_load_safetensors(self, blob: bytes) -> int:
        from safetensors.torch import load

        named = load(blob)
        self.model_runner.model.load_weights(list(named.items()))
        return len(named)

    def medix_end_reload(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model_runner.model, self.model_runner.model_config)

    def medix_weight_fingerprint(self) -> str:
        """Returns a digest of every parameter as the engine holds it (equal across identical replicas)."""
        model = self.model_runner.model
        digest = hashlib.blake2b(digest_size=16)
        for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            digest.update(name.encode())
            data = param.detach().contiguous().cpu().reshape(-1)
            digest.update(memoryview(data.view(torch.uint8).numpy()))
        return digest.hexdigest()
