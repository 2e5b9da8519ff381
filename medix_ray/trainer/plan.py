"""The resource plan of a training run: what each role asks of the cluster, checked before start.

    plan = resource_plan(cfg)
    print(plan.describe())
    problems = plan.check(cluster={"CPU": 16, "GPU": 8})   # [] when it fits

`medix-ray train --dry-run` prints it and checks it against the running cluster (or the one given
with `--assume-cluster`), together with the batch arithmetic the controller relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medix_ray.config import MedixConfig


@dataclass(frozen=True)
class Role:
    name: str
    replicas: int  # the most replicas it may run (autoscaling roles: max_replicas)
    cpus: float  # per replica
    gpus: float  # per replica
    note: str = ""


@dataclass
class ResourcePlan:
    roles: list[Role]
    problems: list[str] = field(default_factory=list)  # config problems found while planning

    def totals(self) -> dict[str, float]:
        return {
            "CPU": sum(r.replicas * r.cpus for r in self.roles),
            "GPU": sum(r.replicas * r.gpus for r in self.roles),
        }

    def describe(self) -> str:
        lines = [f"{'role':<18}{'replicas':>9}{'CPU each':>10}{'GPU each':>10}  note"]
        for r in self.roles:
            lines.append(f"{r.name:<18}{r.replicas:>9}{r.cpus:>10g}{r.gpus:>10g}  {r.note}")
        t = self.totals()
        lines.append(f"{'total':<18}{'':>9}{t['CPU']:>10g}{t['GPU']:>10g}")
        return "\n".join(lines)

    def check(self, cluster: dict[str, float] | None) -> list[str]:
        """Returns every problem: the config's, then each resource the cluster lacks (None: not checked)."""
        problems = list(self.problems)
        if cluster is not None:
            for resource, need in self.totals().items():
                have = float(cluster.get(resource, 0.0))
                if need > have + 1e-9:
                    problems.append(f"the plan needs {need:g} {resource} but the cluster has {have:g}")
            gpu_roles = [r for r in self.roles if r.gpus > 1 and r.gpus % 1]
            for r in gpu_roles:
                problems.append(f"{r.name}: {r.gpus:g} GPUs per replica must be whole when above 1")
        return problems


def resource_plan(cfg: MedixConfig) -> ResourcePlan:
    lc, rc, s = cfg.learner, cfg.rollout, cfg.serve
    gpu = lc.use_gpu
    roles = [
        Role("learner", lc.num_workers, lc.cpus_per_worker, 1.0 if gpu else 0.0, f"DeepSpeed ZeRO-{lc.zero_stage}"),
        Role(
            "rollout",
            rc.replicas,
            rc.num_cpus_per_replica,
            rc.num_gpus_per_replica * rc.tensor_parallel_size if gpu else 0.0,
            f"vLLM, tensor parallel {rc.tensor_parallel_size}",
        ),
    ]
    if not cfg.reward.judge.base_url:
        roles.append(
            Role(
                "judge",
                s.judge_max_replicas,
                s.judge_num_cpus,
                s.judge_num_gpus,
                f"vLLM {cfg.reward.judge.model}, {s.judge_min_replicas}-{s.judge_max_replicas} replicas",
            )
        )
    roles.append(Role("embedder", s.embedder_max_replicas, s.embedder_num_cpus, s.embedder_num_gpus, "autoscaling"))
    roles.append(Role("reward ingress", s.ingress_max_replicas, s.ingress_num_cpus, 0.0, "autoscaling"))
    # A Ray Data read task takes a whole CPU, next to the validator's 0.25; without them free the
    # stream stalls silently (measured: 0.75 CPU free hangs forever).
    roles.append(Role("data", 1, 1.25, 0.0, "Ray Data read + validation"))
    plan = ResourcePlan(roles)
    plan.problems.extend(batch_problems(cfg))
    return plan


def batch_problems(cfg: MedixConfig) -> list[str]:
    """Returns what is wrong with the batch arithmetic (rows must split over mini-batches and ranks)."""
    problems = []
    t, lc, rc = cfg.trainer, cfg.learner, cfg.rollout
    rows = t.prompts_per_step * rc.n
    unit = lc.mini_batches_per_step * lc.num_workers
    if rows % unit:
        problems.append(
            f"trainer.prompts_per_step x rollout.n = {rows} responses cannot split into "
            f"learner.mini_batches_per_step ({lc.mini_batches_per_step}) x learner.num_workers ({lc.num_workers})"
        )
    if rc.n < 2:
        problems.append("rollout.n must be at least 2: group advantages need two responses per prompt")
    if t.sync_interval < 1:
        problems.append("trainer.sync_interval must be at least 1")
    if t.max_staleness < 0:
        problems.append(f"trainer.max_staleness must be 0 or more; got {t.max_staleness}")
    if t.mode == "async" and t.sync_interval > t.max_staleness + 1:
        problems.append(
            f"trainer.sync_interval ({t.sync_interval}) exceeds trainer.max_staleness + 1 "
            f"({t.max_staleness + 1}): in async mode every trajectory would be too stale to train on"
        )
    if t.mode == "async" and rc.temperature != 1.0:
        problems.append(
            f"trainer.mode async needs rollout.temperature 1.0 (got {rc.temperature}): the rollout engine's "
            "log-probs, the behaviour policy of the importance weights, are those of the untempered policy"
        )
    if not cfg.algorithm.tis_cap >= 1.0:
        problems.append(f"algorithm.tis_cap must be at least 1; got {cfg.algorithm.tis_cap}")
    if cfg.algorithm.overlong_shaping and cfg.algorithm.overlong_buffer >= rc.max_tokens:
        problems.append(
            f"algorithm.overlong_buffer ({cfg.algorithm.overlong_buffer}) must be below rollout.max_tokens "
            f"({rc.max_tokens})"
        )
    if lc.use_gpu != (rc.num_gpus_per_replica > 0) and lc.use_gpu:
        problems.append("learner.use_gpu is set but rollout.num_gpus_per_replica is 0")
    return problems


def parse_cluster(text: str) -> dict[str, float]:
    """Parses `CPU=64,GPU=8` into a resource dict."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"cluster resource '{part}' is not of the form NAME=NUMBER")
        try:
            out[key.strip()] = float(value)
        except ValueError as exc:
            raise ValueError(f"cluster resource '{part}': {value!r} is not a number") from exc
    return out
