"""A resumed run keeps the math of the run it resumes, unless the user says `--force`.

A run folder holds `config.yaml` (the config of its last start) and its learner checkpoints. When
`medix-ray train` starts on a folder with a checkpoint, every config key is compared with that
file; a changed key refuses the resume, listing each change as `key: old -> new`, unless it is
operational (`OPERATIONAL`: how long, where and on how much hardware the run goes, how it logs,
validates and checkpoints), or `force=True`. Every key not listed there counts as math, so a key
added later is protected by default.

    changes = check_resume(Path("runs/tiny_cpu"), cfg)             # raises ResumeConfigError
    changes = check_resume(Path("runs/tiny_cpu"), cfg, force=True)   # warns, returns the changes

Keys present on one side only (a config written by an older version) are not compared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medix_ray.config import ConfigError, MedixConfig, to_yaml

logger = logging.getLogger(__name__)

# Keys (or whole sections, ending in ".") that may change between a checkpoint and its resume.
OPERATIONAL: tuple[str, ...] = (
    "eval.",  # the evaluation's settings: not read by training
    "serve.",  # the HTTP proxy's address and auth
    "sync.",  # how weights travel (backend, buckets, checksums); what is sent is the same
    "trainer.steps",
    "trainer.output_dir",
    "trainer.val_interval",
    "trainer.val_samples",
    "trainer.val_before_train",
    "trainer.checkpoint_interval",
    "trainer.keep_checkpoints",
    "trainer.max_restarts",
    "rollout.replicas",
    "rollout.val_temperature",  # validation sampling: reported, never trained on
    "rollout.val_top_p",
    "rollout.gpu_memory_utilization",
    "rollout.tensor_parallel_size",
    "rollout.enforce_eager",
    "rollout.kv_cache_space_gib",
    "rollout.num_cpus_per_replica",
    "rollout.num_gpus_per_replica",
    "learner.use_gpu",
    "learner.cpus_per_worker",
    "learner.gradient_checkpointing",  # recomputes activations: same gradients
    "learner.micro_batch_size",  # each micro-batch carries its exact share of the mini-batch loss
    "learner.max_tokens_per_micro_batch",
    "learner.shared_prefix",
    "learner.attention",
    "model.trust_remote_code",
    "reward.judge.base_url",  # where the judge runs, not which judge (reward.judge.model)
    "reward.judge.api_key_env",
    "reward.judge.timeout_s",
    "reward.judge.max_retries",
    "reward.judge.deadline_s",
    "reward.judge.concurrency",
    "reward.judge.cache_mb",
    "reward.embedding.batch_size",
)
_MISSING = object()


class ResumeConfigError(ConfigError):
    """A resume would change keys that change the math; the message lists each change."""


@dataclass(frozen=True)
class ConfigChange:
    """One key whose value differs between the checkpointed run's config and this one."""

    key: str
    old: Any
    new: Any

    @property
    def operational(self) -> bool:
        return any(self.key == op or (op.endswith(".") and self.key.startswith(op)) for op in OPERATIONAL)

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Returns {"section.key": value} of a nested mapping (an empty mapping is a value)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[ConfigChange]:
    """Returns the keys (dotted) whose values differ between two config trees; one-sided keys are skipped."""
    a, b = _flatten(old), _flatten(new)
    return [ConfigChange(k, a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]


def has_checkpoint(out_dir: Path) -> bool:
    """Returns whether a run folder holds a learner checkpoint (Ray Train's `checkpoint_*` folders)."""
    return any((out_dir / "checkpoints" / "learner").glob("checkpoint_*"))


def check_resume(out_dir: Path, cfg: MedixConfig, *, force: bool = False) -> list[ConfigChange]:
    """Returns the changes from the checkpointed run's config; raises ResumeConfigError for math changes.

    Nothing to compare (no checkpoint, or no config.yaml beside it) returns []. With `force`, the math
    changes are logged as a warning and allowed.
    """
    saved = out_dir / "config.yaml"
    if not has_checkpoint(out_dir) or not saved.is_file():
        return []
    try:
        old = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ResumeConfigError(f"{saved}: the checkpointed run's config is not valid YAML: {exc}") from exc
    if not isinstance(old, dict):
        raise ResumeConfigError(f"{saved}: the checkpointed run's config is not a mapping")
    changes = config_changes(old, yaml.safe_load(to_yaml(cfg)))
    math = [c for c in changes if not c.operational]
    for c in changes:
        if c.operational:
            logger.info("resume: operational key changed: %s", c)
    if math and not force:
        raise ResumeConfigError(
            f"{out_dir} holds a checkpoint trained with a different config; resuming would change the math:\n  "
            + "\n  ".join(map(str, math))
            + "\nrevert these keys, choose another trainer.output_dir, or pass --force to resume anyway"
        )
    if math:
        logger.warning("resume with --force: keys changed from the checkpointed run: %s", "; ".join(map(str, math)))
    return changes
