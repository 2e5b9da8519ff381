"""Entry points of training: `medix-ray train` and `jobs/train.py` share this code.

run_training(cfg)                                  # starts a local Ray cluster when none runs
dry_run(cfg, cluster={"CPU": 64, "GPU": 8})        # prints the plan; returns its problems
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from medix_ray.config import MedixConfig
from medix_ray.environment.node import local_cpus
from medix_ray.environment.ray_init import init_ray
from medix_ray.trainer.plan import resource_plan

logger = logging.getLogger(__name__)


def cluster_resources(address: str | None) -> dict[str, float] | None:
    """Returns the resources of the cluster at `address` (or the one already joined); None if none runs."""
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    if address is None:
        return None
    init_ray(address)
    try:
        return dict(ray.cluster_resources())
    finally:
        ray.shutdown()


def dry_run(cfg: MedixConfig, *, address: str | None = None, cluster: dict[str, float] | None = None) -> list[str]:
    """Prints the resource plan and returns its problems, checked against `cluster`, the cluster at
    `address`, or this machine when the plan needs no GPU."""
    plan = resource_plan(cfg)
    print(plan.describe())
    where = "the given cluster"
    if cluster is None:
        cluster = cluster_resources(address)
        where = f"the cluster at {address}" if cluster is not None else where
    if cluster is None and plan.totals()["GPU"] == 0:
        cluster = {"CPU": float(local_cpus(plan.totals()["CPU"])), "GPU": 0.0}
        where = "the local cluster medix-ray train would start (CPU oversubscribed to the plan)"
    problems = plan.check(cluster)
    if cluster is None:
        print(
            "\nnot checked against a cluster: none is running and the plan needs GPUs "
            "(pass --address, or --assume-cluster CPU=...,GPU=...)"
        )
    else:
        print(f"\nchecked against {where}: {json.dumps({k: cluster.get(k, 0) for k in ('CPU', 'GPU')})}")
    for p in problems:
        print(f"problem: {p}")
    print("plan OK" if not problems else f"{len(problems)} problem(s)")
    return problems


def run_training(
    cfg: MedixConfig, *, address: str | None = None, progress: bool = True, force: bool = False
) -> dict[str, Any]:
    """Runs the controller to `trainer.steps`; prints and returns the summary.

    Before anything starts: a missing or unreadable data file raises DataSourceError, and resuming a
    run folder whose checkpoint was trained with a different math config raises ResumeConfigError
    (trainer/resume.py) unless `force`.
    """
    from pathlib import Path

    from medix_ray.data.readers import check_config_sources
    from medix_ray.trainer.controller import Trainer
    from medix_ray.trainer.resume import check_resume

    check_config_sources(cfg.data)  # a missing or corrupt data file is named before the cluster starts
    check_resume(Path(cfg.trainer.output_dir).absolute(), cfg, force=force)
    trainer = Trainer(cfg, address=address)
    try:
        summary = trainer.run(progress=progress and sys.stderr.isatty())
    finally:
        trainer.shutdown()
    print(format_summary(summary))
    return summary


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"trained {s['steps']} steps (policy version {s['policy_version']}) in {s['seconds'] / 60:.1f} min",
        f"peak memory, all processes: {s['peak_memory_gib']:.2f} GiB",
    ]
    if "reward_gain" in s:
        lines.append(
            f"mean composite reward: first 5 steps {s['reward_first5']:.3f}, last 5 steps {s['reward_last5']:.3f} "
            f"(gain {s['reward_gain']:+.3f})"
        )
    lines.append(
        f"unscored responses {s['unscored_responses']}, rollout retries {s['rollout_retries']}, "
        f"skipped updates {s['skipped_updates']}, learner restarts {s['restarts']}"
    )
    if s.get("plots"):
        lines.append("curves: " + ", ".join(s["plots"]))
    return "\n".join(lines)
