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


DASHBOARD_ENV = "MEDIX_RAY_DASHBOARD"


def local_dashboard(cpu_count: int | None = None) -> bool:
    """Whether a local Ray cluster that medix-ray starts itself (no address given) runs Ray's dashboard.

    Not on a node of at most `SMALL_CPU_NODE` cores: there its head processes (node, state and event
    heads) woke often enough to take a few percent of the 2 cores that the learner and the engines
    share (docs/cpu_notes.md §7). `MEDIX_RAY_DASHBOARD=1` or `0` decides instead. A cluster started with
    `ray start` keeps its own setting."""
    from medix_ray.rollout.vllm_engine import is_small_cpu_node

    raw = os.environ.get(DASHBOARD_ENV, "").strip()
    if raw:
        if raw not in ("0", "1"):
            raise ValueError(f"{DASHBOARD_ENV}={raw!r}: expected 1 (dashboard) or 0 (none)")
        return raw == "1"
    return not is_small_cpu_node(cpu_count)
