"""Starting or joining Ray: one policy for every entry point (train, evaluate, serve-rewards, data, dry runs).

init_ray()                          # a local cluster sized for this machine, unless one is joined
init_ray("auto", log_to_driver=False)
init_ray(cpus_needed=plan.totals()["CPU"])   # a local CPU cluster large enough for a resource plan
"""

from __future__ import annotations

import os
from typing import Any

from medix_ray.environment.node import has_cuda_gpu, local_cpus, local_dashboard, worker_env


def init_ray(
    address: str | None = None,
    *,
    cpus_needed: float = 0.0,
    num_cpus: int | None = None,
    log_to_driver: bool | None = None,
) -> bool:
    """Joins the Ray cluster at `address`, or starts a local one, unless this process is already connected;
    returns True if it connected now.

    A local cluster (no `address`, and no RAY_ADDRESS in the environment) gets `num_cpus` logical CPUs if
    given, else, without a CUDA GPU, `node.local_cpus(cpus_needed)` (the machine's cores, at least 4 and
    at least `cpus_needed`), and with one, what Ray detects; Ray's dashboard only where
    `node.local_dashboard()` says so. Every cluster, local or joined, runs our workers with
    `node.worker_env()` (PYTHONPATH with the repository root), and forwards worker output to this process
    as the active console says (`--verbose`), unless `log_to_driver` decides. Whether it connected now or
    earlier, the console then quiets the libraries' handlers and links the Ray session's logs into the run
    folder (medix_ray/console.py)."""
    import ray

    from medix_ray.console import current

    console = current()
    connected_now = False
    if not ray.is_initialized():
        local = address is None and not os.environ.get("RAY_ADDRESS")
        if num_cpus is not None and not local:
            where = address if address is not None else f"RAY_ADDRESS={os.environ['RAY_ADDRESS']}"
            raise ValueError(f"num_cpus={num_cpus} sizes a local cluster; the cluster at {where} has its own")
        kwargs: dict[str, Any] = {**console.ray_init_kwargs(), "runtime_env": {"env_vars": worker_env()}}
        if log_to_driver is not None:
            kwargs["log_to_driver"] = log_to_driver
        if local:
            if num_cpus is None and not has_cuda_gpu():
                num_cpus = local_cpus(cpus_needed)
            kwargs.update(num_cpus=num_cpus, include_dashboard=local_dashboard())
        ray.init(address=address, **kwargs)
        connected_now = True
    console.quiet_libraries()
    console.link_ray_logs()
    return connected_now
