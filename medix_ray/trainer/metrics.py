"""Per-step training metrics: JSONL (the record), TensorBoard event files, reward-curve PNGs.

    log = MetricsLog("runs/tiny_cpu")
    log.write(step=1, metrics={"reward/mean": 0.42, "time/rollout_s": 9.1})
    log.close()                       # flushes TensorBoard
    plot_curves("runs/tiny_cpu/metrics.jsonl", "runs/tiny_cpu")   # reward.png, components.png

On resume the JSONL keeps the steps up to the checkpoint and drops the rest, so that every step
appears once; a torn last line (a kill mid-append) is dropped with a warning. Each step's rows are
flushed and fsynced when written.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class MetricsFileError(ValueError):
    """A metrics or rollout log has a bad line before its last; the message names the file and line."""


def truncate_jsonl(path: Path, resume_step: int) -> None:
    """Keeps the rows of steps up to `resume_step` (those after it will be trained again).

    A torn last line (the process was killed mid-append) is dropped with a warning naming the file;
    the file is rewritten atomically, so a kill during the rewrite leaves the old one.
    """
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r["step"] <= resume_step]
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in kept))
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)


class MetricsLog:
    def __init__(self, out_dir: str | Path, resume_step: int = 0, tensorboard: bool = True):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        truncate_jsonl(self.path, resume_step)
        self.rollouts_path = self.dir / "rollouts.jsonl"
        truncate_jsonl(self.rollouts_path, resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._rollouts = self.rollouts_path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        _sync(self._file)
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def write_rollouts(self, step: int, records: list[dict[str, Any]]) -> None:
        """Appends every response of a step (sample, text, reward breakdown) to rollouts.jsonl."""
        for record in records:
            self._rollouts.write(json.dumps({"step": step, **record}) + "\n")
        _sync(self._rollouts)

    def close(self) -> None:
        self._file.close()
        self._rollouts.close()
        if self._tb is not None:
            self._tb.close()


def _sync(f) -> None:
    """Flushes a log file to disk (once per step: a crash loses at most the step being written)."""
    f.flush()
    os.fsync(f.fileno())


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Returns the rows of a metrics or rollout log; a torn last line is skipped with a warning.

    Only the last line can be torn (a kill mid-append); a bad line before it raises MetricsFileError.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    rows = []
    for k, (n, line) in enumerate(numbered):
        try:
            row = json.loads(line.decode("utf-8"))
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not a row object with a step")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if k == len(numbered) - 1:
                logger.warning("%s: dropping its torn last line %d (%d bytes): %s", path, n, len(line), exc)
                break
            raise MetricsFileError(f"{path}: line {n} is not a JSON row ({exc})") from exc
        rows.append(row)
    return rows


def window_means(rows: Sequence[dict[str, Any]], key: str, window: int) -> tuple[float, float]:
    """Returns the mean of `key` over the first and over the last `window` steps that have it."""
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        raise ValueError(f"no step has the metric {key!r}")
    w = min(window, len(values))
    return sum(values[:w]) / w, sum(values[-w:]) / w


def plot_curves(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Writes reward.png (mean reward per step, training and validation) and components.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    steps = [r["step"] for r in rows]
    val = [(r["step"], r["val/reward_mean"]) for r in rows if r.get("val/reward_mean") is not None]
    reward_lines = [(steps, [r.get("reward/mean") for r in rows], "o", "train reward (mean)")]
    if val:
        reward_lines.append((*zip(*val, strict=True), "s", "validation reward (mean)"))
    from medix_ray.rewards.composite import COMPONENTS, component_metric

    component_lines = [(steps, [r.get(component_metric(c)) for r in rows], ".", c) for c in COMPONENTS]
    return [
        _plot(plt, out_dir / "reward.png", "composite reward", reward_lines),
        _plot(plt, out_dir / "components.png", "component mean", component_lines),
    ]


def _plot(plt, path: Path, ylabel: str, lines: list[tuple]) -> Path:
    """Writes one line chart over steps; each line is (x, y, marker, label)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for x, y, marker, label in lines:
        ax.plot(x, y, marker=marker, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
