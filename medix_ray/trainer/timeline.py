"""The run's timeline: who was busy when. Raw spans in timeline.jsonl, one lane per role in timeline.png.

    timeline = Timeline("runs/tiny_cpu/timeline.jsonl")
    with timeline.span("learner", "update", step=3, version=2):
        ...                                               # the learner's update
    start = timeline.now()
    ...                                                   # a rollout call
    timeline.record("rollout", "generate", start, timeline.now(), 3, lane="rollout/ab12cd34", version=2)
    timeline.close()
    plot_timeline("runs/tiny_cpu/timeline.jsonl", "runs/tiny_cpu/timeline.png")

A span is one phase of one role: `role` (rollout, reward, learner, sync), `lane` (the row it is
drawn on: `rollout/<replica id>` for each rollout replica, else the role), `name` (generate,
score, logprobs, ref_logprobs, update, save, push, resync, validate), `start` and `end` in seconds
since the run started (the monotonic clock), the training `step` it belongs to, the policy
`version` involved, the `replica` where known, and a few counts (`groups`, `responses`).

Times are relative to the run's start. A resumed run (a new process) appends to the same file and
continues its time axis after the last recorded span, each process its own `session`, so that the
spans of an interrupted and a resumed process do not overlap. Steps trained twice (after a
learner restart) keep both spans: the time was spent. Spans are written as they end (flushed, not
fsynced: a lost tail costs a picture, not a result); recording is thread-safe.

`python -m medix_ray.trainer.timeline RUN_DIR` redraws RUN_DIR/timeline.png.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ROLES = ("rollout", "reward", "learner", "sync")  # the lanes' order in the picture (rollout: one per replica)
GAP_S = 1.0  # the gap left between a resumed session and the last span of the one before


@dataclass(frozen=True)
class Span:
    """One phase of one role, in seconds since the run's start."""

    role: str
    name: str
    start: float
    end: float
    step: int  # the training step it belongs to (0: before the first; validation: the step just trained)
    lane: str = ""  # "" = the role
    version: int | None = None
    replica: str | None = None
    session: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"span role {self.role!r} is not one of {ROLES}")
        if not self.end >= self.start:
            raise ValueError(f"span {self.role}/{self.name} ends ({self.end}) before it starts ({self.start})")
        if not self.lane:
            object.__setattr__(self, "lane", self.role)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self)}  # a JSONL line; empty fields left out
        return {k: v for k, v in row.items() if v is not None and v != {}}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Span:
        return cls(**row)


class Timeline:
    """Records spans into a JSONL file; `now()` is the run-relative clock."""

    def __init__(self, path: str | Path, clock: Any = time.monotonic):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._file = None
        previous = read_spans(self.path) if self.path.exists() else []
        self.session = max((s.session for s in previous), default=-1) + 1
        # This session's time starts after the last span of the previous ones.
        self._offset = max((s.end for s in previous), default=-GAP_S) + GAP_S
        self._origin = clock()

    def now(self) -> float:
        """Seconds since the run started (continuing a resumed run's time axis)."""
        return self._offset + (self._clock() - self._origin)

    def record(self, role: str, name: str, start: float, end: float, step: int, **fields: Any) -> Span:
        """Writes one span measured with `now()`; `fields`: lane, version, replica, counts."""
        span = Span(role, name, start, end, step, session=self.session, **fields)
        line = json.dumps(span.to_json()) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line)
            self._file.flush()
        return span

    @contextmanager
    def span(self, role: str, name: str, step: int, **fields: Any) -> Iterator[None]:
        """Records the time the body takes (also when it raises: a failed phase still took its time)."""
        start = self.now()
        try:
            yield
        finally:
            self.record(role, name, start, self.now(), step, **fields)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_spans(path: str | Path) -> list[Span]:
    """Returns the spans of a timeline.jsonl (read as the metrics log is: a torn last line is dropped
    with a warning, a bad line before it raises MetricsFileError); a row that is not a span raises
    ValueError naming the file and the span's place."""
    from medix_ray.trainer.metrics import read_metrics

    spans = []
    for k, row in enumerate(read_metrics(path), start=1):
        try:
            spans.append(Span.from_json(row))
        except (ValueError, TypeError) as exc:  # a missing or unknown field, a bad role, an end before the start
            raise ValueError(f"{path}: span {k} is not a span ({exc})") from exc
    return spans


def lanes(spans: list[Span]) -> list[str]:
    """Returns the lanes in drawing order: each rollout replica (sorted), then reward, learner, sync."""
    found = {s.lane: s.role for s in spans}
    return sorted(found, key=lambda lane: (ROLES.index(found[lane]), lane))


def busy_seconds(spans: list[Span]) -> dict[str, float]:
    """Returns the seconds each lane was busy (the union of its spans: nested or overlapping spans count once)."""
    out: dict[str, float] = {}
    for lane in lanes(spans):
        total, reach = 0.0, float("-inf")
        for s in sorted((s for s in spans if s.lane == lane), key=lambda s: s.start):
            if s.end > reach:
                total += s.end - max(s.start, reach)
                reach = s.end
        out[lane] = total
    return out


def plot_timeline(timeline_path: str | Path, png_path: str | Path) -> Path:
    """Writes timeline.png: one horizontal lane per rollout replica, reward, learner and sync."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = read_spans(timeline_path)
    if not spans:
        raise ValueError(f"{timeline_path}: no spans to draw")
    fig = draw_timeline(spans)
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110, bbox_inches="tight")  # the legend sits right of the axes
    plt.close(fig)
    return png_path


def draw_timeline(spans: list[Span]):
    """Returns the matplotlib figure of the spans: a lane per `lanes()` entry, spans coloured by name."""
    import matplotlib.pyplot as plt

    order = lanes(spans)
    names = sorted({s.name for s in spans})
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(order) + 1.6))
    for row, lane in enumerate(order):
        mine = [s for s in spans if s.lane == lane]
        ax.broken_barh(
            [(s.start, s.seconds) for s in mine],
            (row - 0.4, 0.8),
            facecolors=[colours[s.name] for s in mine],
            edgecolor="black",
            linewidth=0.3,
            label=lane,
        )
    ax.set_yticks(range(len(order)), labels=order)
    ax.invert_yaxis()  # the first lane on top
    ax.set_xlabel("seconds since the run started")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
    ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, title="phase")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="redraw RUN_DIR/timeline.png from RUN_DIR/timeline.jsonl")
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    run = Path(args.run_dir)
    print(plot_timeline(run / "timeline.jsonl", run / "timeline.png"))


if __name__ == "__main__":
    main()
