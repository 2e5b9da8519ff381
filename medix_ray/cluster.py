"""What every Ray worker we start needs in its environment."""

from __future__ import annotations

import os
from pathlib import Path


def worker_env() -> dict[str, str]:
    """Returns the runtime-env variables of our Ray workers: PYTHONPATH with the repository root, so that
    workers import `medix_ray` and `deployments`. (Engines size their KV cache from the config, passed to
    each engine: `medix_ray/rollout/vllm_engine.py:kv_cache_bytes`.)"""
    root = str(Path(__file__).resolve().parents[1])
    current = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": root if not current else f"{root}{os.pathsep}{current}"}
