"""Per-step training metrics: JSONL (the record), TensorBoard event files, reward-curve PNGs.

    log = MetricsLog("runs/tiny_cpu")
    log.write(step=1, metrics={"reward/mean": 0.42, "time/rollout_s": 9.1})
    log.close()                       # flushes TensorBoard
    plot_curves("runs/tiny_cpu/metrics.jsonl", "runs/tiny_cpu")   # reward.png, components.png

On resume the JSONL keeps the steps up to the checkpoint and drops the rest, so that every step
appears once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def truncate_jsonl(path: Path, resume_step: int) -> None:
    """Keeps the rows of steps up to `resume_step` (those after it will be trained again)."""
    if path.exists():
        kept = [r for r in read_metrics(path) if r["step"] <= resume_step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


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
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def write_rollouts(self, step: int, records: list[dict[str, Any]]) -> None:
        """Appends every response of a step (sample, text, reward breakdown) to rollouts.jsonl."""
        for record in records:
            self._rollouts.write(json.dumps({"step": step, **record}) + "\n")
        self._rollouts.flush()

    def close(self) -> None:
        self._file.close()
        self._rollouts.close()
        if self._tb is not None:
            self._tb.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


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
    written = []
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r.get("reward/mean") for r in rows], marker="o", label="train reward (mean)")
    val = [(r["step"], r["val/reward_mean"]) for r in rows if r.get("val/reward_mean") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), marker="s", label="validation reward (mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("composite reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "reward.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("reward/format", "reward/accuracy_llm", "reward/accuracy_embed", "reward/modality"):
        ax.plot(steps, [r.get(key) for r in rows], marker=".", label=key.split("/")[1])
    ax.set_xlabel("step")
    ax.set_ylabel("component mean")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "components.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
