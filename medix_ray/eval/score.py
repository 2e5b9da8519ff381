"""The score phase: judged rows in, per-task accuracies, confidence intervals and overall averages out.

    judgment rows (one protocol) ──score_records──▶ ScoreTable ──report.write_report──▶ files

What the reference computes, and how this differs (docs/method.md §4.1, §4.4):

- Per task, accuracy = mean over *scored* items of the score (binary 0/1) or score/5 (0–5 rubric), i.e. the
  reference's correct/N and Σscore/(5·N). Items whose input, generation or judging failed are excluded from
  that mean and counted by status; they are never silently a 0. A task with no scored item has accuracy
  None, and a table with any error or any None accuracy says `complete: False`.
- "Overall" is the reference's unweighted macro average over tasks (those with an accuracy); beside it come
  the LLM and VLM sub-averages (by the rows' `group`) and the item-weighted micro average, which the
  reference does not report (weakness 14).
- Every task gets a percentile bootstrap 95% CI; the macro, LLM, VLM and micro averages get one from
  stratified resampling (items resampled within each task independently, the average recomputed), which
  keeps each task's N fixed as the design does.
- Every figure is a fraction in [0, 1]; percentages are only a display concern of the report (weakness 4).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medix_ray.eval.records import KINDS, RUBRIC_MAX, SCORED_STATUSES, STATUSES

ERROR_STATUSES = tuple(s for s in STATUSES if s not in SCORED_STATUSES)
GROUPS = ("llm", "vlm")
CI_LEVEL = 0.95
LEADERBOARD_FILE = "leaderboard.yaml"  # packaged: medix_ray/eval/configs/leaderboard.yaml


@dataclass
class ModalityScore:
    """One imaging modality's share of a task: its scored items and their accuracy."""

    modality: str
    n: int  # items of this modality (all statuses)
    n_scored: int
    accuracy: float | None  # fraction in [0, 1]; None when no item of the modality was scored


@dataclass
class TaskScore:
    """One task's result: how many items, how many scored, errors by status, accuracy and its 95% CI."""

    task: str
    group: str  # llm | vlm ("" for a task named in task_order that has no rows)
    kind: str  # binary | rubric ("" likewise)
    n: int  # all items
    n_scored: int
    errors: dict[str, int]  # status -> count, for every non-scored status (zeros included)
    accuracy: float | None  # fraction in [0, 1]; None when nothing was scored
    n_grader_attack: int  # scored items decided 0 without the judge (their prediction attacked it)
    ci: tuple[float, float] | None  # percentile bootstrap 95% CI of the accuracy
    modalities: dict[str, ModalityScore] = field(default_factory=dict)  # modality -> breakdown (known only)
    # The task's bootstrap replicates of the accuracy, shape [n_boot]; kept for re-averaging over subsets.
    boot: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n_errors(self) -> int:
        """Returns the number of items that were not scored."""
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        """Returns the task's figures as JSON-safe values (no bootstrap replicates)."""
        return {
            "task": self.task,
            "group": self.group,
            "kind": self.kind,
            "n": self.n,
            "n_scored": self.n_scored,
            "n_errors": self.n_errors,
            "errors": dict(self.errors),
            "n_grader_attack": self.n_grader_attack,
            "accuracy": self.accuracy,
            "ci": None if self.ci is None else list(self.ci),
            "modalities": {
                m: {"n": s.n, "n_scored": s.n_scored, "accuracy": s.accuracy} for m, s in self.modalities.items()
            },
        }


@dataclass
class Average:
    """An average over tasks (macro) or items (micro), with its stratified bootstrap 95% CI."""

    accuracy: float | None  # fraction in [0, 1]; None when no task it covers has an accuracy
    ci: tuple[float, float] | None
    tasks: tuple[str, ...]  # the tasks averaged (those with an accuracy)

    def to_dict(self) -> dict[str, Any]:
        """Returns the average as JSON-safe values."""
        return {
            "accuracy": self.accuracy,
            "ci": None if self.ci is None else list(self.ci),
            "tasks": list(self.tasks),
        }


@dataclass
class Overall:
    """The table's summary: macro average (the reference's "Overall"), LLM/VLM sub-averages, micro average."""

    accuracy: float | None  # unweighted macro average over tasks with an accuracy
    ci: tuple[float, float] | None
    llm: Average
    vlm: Average
    micro: Average  # item-weighted: all scored items pooled
    n_tasks: int  # tasks in the table
    complete: bool  # False when any task has an error or no accuracy

    def to_dict(self) -> dict[str, Any]:
        """Returns the summary as JSON-safe values."""
        return {
            "accuracy": self.accuracy,
            "ci": None if self.ci is None else list(self.ci),
            "llm": self.llm.to_dict(),
            "vlm": self.vlm.to_dict(),
            "micro": self.micro.to_dict(),
            "n_tasks": self.n_tasks,
            "complete": self.complete,
        }


@dataclass
class ScoreTable:
    """The scores of one protocol's judged rows: one TaskScore per task, in order, and the Overall."""

    tasks: list[TaskScore]
    overall: Overall
    errors: dict[str, int]  # status -> count over all tasks (zeros included)
    n_boot: int
    seed: int
    rounds_asked: int = 0  # judge rounds (or votes) answered over all rows
    rounds_saved: int = 0  # rounds the early decision did not need (medix_ray.eval.protocol.decided)

    def task(self, name: str) -> TaskScore:
        """Returns the named task's score; raises KeyError naming the known tasks."""
        for t in self.tasks:
            if t.task == name:
                return t
        raise KeyError(f"no task {name!r} in the table; tasks: {[t.task for t in self.tasks]}")

    @property
    def n_grader_attack(self) -> int:
        """Returns how many items over all tasks were decided 0 as grader attacks."""
        return sum(t.n_grader_attack for t in self.tasks)

    def macro(self, tasks: Iterable[str] | None = None) -> Average:
        """Returns the unweighted mean (and stratified bootstrap CI) over the given tasks that have an accuracy."""
        wanted = None if tasks is None else set(tasks)
        chosen = [t for t in self.tasks if t.accuracy is not None and (wanted is None or t.task in wanted)]
        return _average(chosen, weights=None)

    def to_dict(self) -> dict[str, Any]:
        """Returns the whole table as JSON-safe values (fractions in [0, 1]; None for no accuracy)."""
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "overall": self.overall.to_dict(),
            "errors": dict(self.errors),
            "n_grader_attack": self.n_grader_attack,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "ci_level": CI_LEVEL,
            "judge_rounds": {"asked": self.rounds_asked, "saved": self.rounds_saved},
        }


@dataclass(frozen=True)
class Leaderboard:
    """The published per-benchmark table: models × tasks, fractions in [0, 1] (cells unverified, see yaml)."""

    models: tuple[str, ...]  # display names, column order of the site
    tasks: tuple[str, ...]  # our task names, row order of the site
    display: dict[str, str]  # task -> the site's benchmark name
    groups: dict[str, str]  # task -> llm | vlm
    cells: dict[str, dict[str, float]]  # model -> task -> accuracy
    average: dict[str, float]  # model -> the published AVG row
    source: str
    url: str

    def mean(self, model: str, tasks: Iterable[str] | None = None) -> float:
        """Returns the model's unweighted mean over the given tasks (all 17 when None)."""
        names = self.tasks if tasks is None else tuple(tasks)
        unknown = [t for t in names if t not in self.display]
        if unknown:
            raise KeyError(f"tasks {unknown} are not on the leaderboard; it has {list(self.tasks)}")
        if not names:
            raise ValueError("cannot average a model over no tasks")
        return float(np.mean([self.cells[model][t] for t in names]))


def normalized_score(row: Mapping[str, Any]) -> float | None:
    """Returns a row's score as a fraction in [0, 1] (binary as is, rubric / 5); None unless it was scored.

    Raises ValueError naming the row's id for an unknown kind or status, or a score outside its range.
    """
    rid = row.get("id")
    kind, status = row.get("kind"), row.get("status")
    if kind not in KINDS:
        raise ValueError(f"row {rid!r}: kind {kind!r} is not one of {KINDS}")
    if status not in STATUSES:
        raise ValueError(f"row {rid!r}: status {status!r} is not one of {STATUSES}")
    if status not in SCORED_STATUSES:
        return None  # whatever score an error row carries (None, or NaN from a DataFrame) is not a result
    score = row.get("score")
    if status == "grader_attack" and score != 0:
        raise ValueError(f"row {rid!r}: a grader_attack row is decided 0, got score {score!r}")
    if isinstance(score, bool) or not isinstance(score, int | float | np.integer | np.floating):
        raise ValueError(f"row {rid!r}: a scored row needs a numeric score, got {score!r}")
    score = float(score)
    if kind == "binary":
        if score not in (0.0, 1.0):
            raise ValueError(f"row {rid!r}: binary score {score!r} is not 0 or 1")
        return score
    if not (0.0 <= score <= RUBRIC_MAX):  # also rejects NaN
        raise ValueError(f"row {rid!r}: rubric score {score!r} is outside [0, {RUBRIC_MAX:g}]")
    return score / RUBRIC_MAX


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Returns n_boot bootstrap replicates of the mean of `values` [N] (resampled with replacement), shape [n_boot]."""
    if len(values) == 0:
        raise ValueError("cannot bootstrap an empty sample")
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[idx].mean(axis=1)


def percentile_ci(replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Returns the percentile interval (low, high) of bootstrap replicates [n_boot] at the given level."""
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)


def score_records(
    rows: Iterable[Mapping[str, Any]],
    *,
    task_order: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> ScoreTable:
    """Returns the ScoreTable of one protocol's judged rows (see the module docstring for the rules).

    Tasks come in `task_order` (a task named there without rows appears with n=0 and no accuracy), then any
    other task in sorted order. Raises ValueError naming the id for a duplicate id, a missing field, an
    unknown status or kind, a score outside its range, or a task whose rows disagree on kind or group.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    seen: set[str] = set()
    by_task: dict[str, list[tuple[Mapping[str, Any], float | None]]] = {}
    asked = saved = 0
    for row in rows:
        for key in ("id", "task", "kind", "group", "status"):
            if key not in row:
                raise ValueError(f"row {row.get('id')!r}: missing field {key!r}")
        rid = row["id"]
        if rid in seen:
            raise ValueError(f"row {rid!r}: duplicate id; the judged rows should have one row per id")
        seen.add(rid)
        if row["group"] not in GROUPS:
            raise ValueError(f"row {rid!r}: group {row['group']!r} is not one of {GROUPS}")
        by_task.setdefault(row["task"], []).append((row, normalized_score(row)))
        asked += _count(row, "rounds_asked", default=len(row.get("rounds") or []))
        saved += _count(row, "rounds_saved", default=0)

    order = list(dict.fromkeys(task_order or ()))
    order += sorted(t for t in by_task if t not in set(order))
    # One stream per task, keyed by its name: a task's CI is the same whichever other tasks are scored with it.
    tasks = [_score_task(name, by_task.get(name, []), n_boot, _task_rng(seed, name)) for name in order]

    with_acc = [t for t in tasks if t.accuracy is not None]
    macro = _average(with_acc, weights=None)
    overall = Overall(
        accuracy=macro.accuracy,
        ci=macro.ci,
        llm=_average([t for t in with_acc if t.group == "llm"], weights=None),
        vlm=_average([t for t in with_acc if t.group == "vlm"], weights=None),
        micro=_average(with_acc, weights=[t.n_scored for t in with_acc]),
        n_tasks=len(tasks),
        complete=bool(tasks) and all(t.accuracy is not None and t.n_errors == 0 for t in tasks),
    )
    errors = {s: sum(t.errors[s] for t in tasks) for s in ERROR_STATUSES}
    return ScoreTable(
        tasks=tasks, overall=overall, errors=errors, n_boot=n_boot, seed=seed, rounds_asked=asked, rounds_saved=saved
    )


def _count(row: Mapping[str, Any], key: str, default: int) -> int:
    """Returns a row's non-negative round count `key` (`default` when absent: rows stored before it existed)."""
    value = row.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"row {row.get('id')!r}: {key} must be a non-negative integer, got {value!r}")
    return int(value)


def load_leaderboard(path: str | Path | None = None) -> Leaderboard:
    """Returns the published leaderboard read from the packaged medix_ray/eval/configs/leaderboard.yaml (or `path`)."""
    import yaml

    from medix_ray.eval.configs import packaged

    path = Path(path) if path is not None else packaged(LEADERBOARD_FILE)
    with path.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    models = tuple(raw["models"])
    if len(raw["average"]) != len(models):
        raise ValueError(f"{path}: 'average' has {len(raw['average'])} values for {len(models)} models")
    cells: dict[str, dict[str, float]] = {m: {} for m in models}
    display, groups = {}, {}
    for entry in raw["tasks"]:
        name = entry["name"]
        if len(entry["scores"]) != len(models):
            raise ValueError(f"{path}: task {name!r} has {len(entry['scores'])} scores for {len(models)} models")
        if entry["group"] not in GROUPS:
            raise ValueError(f"{path}: task {name!r} has group {entry['group']!r}, expected one of {GROUPS}")
        display[name] = str(entry["display"])
        groups[name] = entry["group"]
        for model, value in zip(models, entry["scores"], strict=True):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{path}: {model} on {name}: {value} is not a fraction in [0, 1]")
            cells[model][name] = float(value)
    return Leaderboard(
        models=models,
        tasks=tuple(display),
        display=display,
        groups=groups,
        cells=cells,
        average={m: float(v) for m, v in zip(models, raw["average"], strict=True)},
        source=str(raw.get("source", path)),
        url=str(raw.get("url", "")),
    )


def _task_rng(seed: int, task: str) -> np.random.Generator:
    """Returns the task's bootstrap generator, seeded by (seed, a stable hash of the task name)."""
    return np.random.default_rng([seed, zlib.crc32(task.encode("utf-8"))])


def _score_task(
    name: str, rows: list[tuple[Mapping[str, Any], float | None]], n_boot: int, rng: np.random.Generator
) -> TaskScore:
    """Returns one task's TaskScore from its (row, normalized score) pairs."""
    kinds = {r["kind"] for r, _ in rows}
    groups = {r["group"] for r, _ in rows}
    for label, values in (("kind", kinds), ("group", groups)):
        if len(values) > 1:
            raise ValueError(f"task {name!r}: rows disagree on {label}: {sorted(values)}")
    errors = {s: 0 for s in ERROR_STATUSES}
    for r, _ in rows:
        if r["status"] in errors:
            errors[r["status"]] += 1
    scored = np.array([s for _, s in rows if s is not None], dtype=np.float64)
    accuracy = ci = boot = None
    if len(scored):
        accuracy = float(scored.mean())
        boot = bootstrap_means(scored, n_boot, rng)
        ci = percentile_ci(boot)

    by_modality: dict[str, list[float | None]] = {}
    for r, s in rows:
        modality = r.get("modality")
        if isinstance(modality, str) and modality:  # "" (unknown) and None/NaN from a DataFrame are skipped
            by_modality.setdefault(modality, []).append(s)
    modalities = {
        m: ModalityScore(
            modality=m,
            n=len(vals),
            n_scored=sum(v is not None for v in vals),
            accuracy=_mean([v for v in vals if v is not None]),
        )
        for m, vals in sorted(by_modality.items())
    }
    return TaskScore(
        task=name,
        group=groups.pop() if groups else "",
        kind=kinds.pop() if kinds else "",
        n=len(rows),
        n_scored=len(scored),
        errors=errors,
        accuracy=accuracy,
        n_grader_attack=sum(1 for r, _ in rows if r["status"] == "grader_attack"),
        ci=ci,
        modalities=modalities,
        boot=boot,
    )


def _average(tasks: Sequence[TaskScore], weights: Sequence[float] | None) -> Average:
    """Returns the (weighted) mean of the tasks' accuracies and the CI of the same mean of their replicates."""
    if not tasks:
        return Average(accuracy=None, ci=None, tasks=())
    w = np.ones(len(tasks)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    accuracy = float(np.dot(w, [t.accuracy for t in tasks]))
    # Each task's replicates come from resampling its own items, so averaging them replicate by replicate
    # is the stratified bootstrap of the average.
    replicates = np.stack([t.boot for t in tasks])  # [T, n_boot]
    ci = percentile_ci(w @ replicates)
    return Average(accuracy=accuracy, ci=ci, tasks=tuple(t.task for t in tasks))


def _mean(values: Sequence[float]) -> float | None:
    """Returns the mean of the values, or None for none."""
    return float(math.fsum(values) / len(values)) if values else None
