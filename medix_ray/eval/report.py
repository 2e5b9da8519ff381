"""The report phase: a ScoreTable (and the judged samples) in, the files a reader and the leaderboard need out.

    <out_dir>/report.md        per-task table (N, scored, errors, accuracy %, 95% CI), overall / LLM / VLM /
                               micro rows, error summary, per-modality table, comparison with the leaderboard
    <out_dir>/scores.csv       the per-task table and the summary rows, as fractions
    <out_dir>/scores.json      ScoreTable.to_dict() plus model, protocol, judge, timestamp (and extra protocols)
    <out_dir>/leaderboard.png  overall averages of the published models and ours (ours highlighted, with its CI)
    <out_dir>/submission.zip   see below

Every file is written to a temporary file in `out_dir` and renamed into place, so a crash leaves the old
file or the new one, never half of one. report.md shows percentages; every machine-readable file holds
fractions in [0, 1] (the reference mixes the two in one table, weakness 4).

Submission layout (an assumption): the leaderboard's own submission format is not public, so the zip
follows the reference evaluation's output layout (docs/method.md §4.1), with `<model>` the model
name made folder-safe:

    results/<model>/<model>.jsonl        one JSON object per sample: id, task, question, answer,
                                         prediction, score (under the judged protocol), status, protocol
    results/<model>/<model>_score.txt    the per-task table as fractions (overwritten, not appended)
    results/<model>/scores.json          the same content as <out_dir>/scores.json

Rubric scores in the jsonl stay on the judge's 0–5 scale, as the reference stores them; an item that was
not scored has score null and its status says why.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medix_ray.eval.records import SCORED_STATUSES
from medix_ray.eval.score import ERROR_STATUSES, Average, Leaderboard, ScoreTable
from medix_ray.redact import redact_url

logger = logging.getLogger(__name__)

OURS_COLOR = "#d62728"
PUBLISHED_COLOR = "#9aa5b1"


def write_report(
    out_dir: str | Path,
    table: ScoreTable,
    *,
    model: str,
    protocol: str,
    judge: str,
    samples: Iterable[Mapping[str, Any]] | None,
    leaderboard: Leaderboard | None = None,
    extra: dict[str, ScoreTable] | None = None,
) -> dict[str, Path]:
    """Returns {name: path} of the files written into `out_dir`: report, csv, json, png, zip.

    `table` is the judged protocol's scores and `samples` its per-item rows (id, task, question, answer,
    prediction, score, status); `extra` holds other protocols' tables, shown as extra columns. Without a
    leaderboard (or when no evaluated task is on it) there is no comparison and no png.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    name = folder_safe(model)
    meta = {
        "model": model,
        "protocol": protocol,
        "judge": redact_url(judge),  # a URL's credentials never reach report.md, scores.json or the zip
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    payload = {**meta, **table.to_dict(), "extra": {p: t.to_dict() for p, t in extra.items()}}
    scores_json = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    comparison = _comparison(table, leaderboard) if leaderboard is not None else None

    files: dict[str, Path] = {}
    files["report"] = _write_atomic(out / "report.md", render_markdown(table, meta, leaderboard, extra).encode())
    files["csv"] = _write_atomic(out / "scores.csv", render_csv(table, extra).encode())
    files["json"] = _write_atomic(out / "scores.json", scores_json.encode())
    if comparison is not None:
        files["png"] = _write_atomic(out / "leaderboard.png", render_chart(table, leaderboard, model, comparison))
    else:
        logger.info("no leaderboard comparison for %s: no evaluated task is on the leaderboard", model)

    members = {f"results/{name}/{name}_score.txt": render_score_txt(table, meta).encode()}
    if samples is not None:
        lines = [json.dumps(_sample_line(s, protocol), ensure_ascii=False) + "\n" for s in samples]
        members[f"results/{name}/{name}.jsonl"] = "".join(lines).encode()
    members[f"results/{name}/scores.json"] = scores_json.encode()
    files["zip"] = _write_atomic(out / "submission.zip", _zip_bytes(members))
    return files


class UnsafeNameError(ValueError):
    """A name from user input cannot be a folder or zip-entry name (empty, `.` or `..`); the message says which."""


def folder_safe(model: str) -> str:
    """Returns the model name as a folder-safe name: its last path component, odd characters as '_'.

    The result is one path component, never `.` or `..`, so `<output_dir>/<name>` and the zip's
    `results/<name>/` entries stay inside their folder; a name with no such component is refused:

        >>> folder_safe("/models/MBZUAI/MediX-R1-8B/")
        'MediX-R1-8B'
        >>> folder_safe("../")
        Traceback (most recent call last):
        ...
        medix_ray.eval.report.UnsafeNameError: model name '../' has no usable folder name (its last component is '..')
    """
    last = re.split(r"[/\\]+", model.strip().rstrip("/\\"))[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", last)
    if name in ("", ".", ".."):
        raise UnsafeNameError(f"model name {model!r} has no usable folder name (its last component is {last!r})")
    return name


def render_markdown(
    table: ScoreTable,
    meta: Mapping[str, str],
    leaderboard: Leaderboard | None = None,
    extra: Mapping[str, ScoreTable] | None = None,
) -> str:
    """Returns report.md: the per-task table, errors, modalities and the leaderboard comparison."""
    extra = dict(extra or {})
    o = table.overall
    lines = [
        f"# Evaluation of {meta['model']}",
        "",
        f"- protocol: {meta['protocol']}; judge: {meta['judge']}; written {meta['timestamp']}",
        f"- complete: {'yes' if o.complete else 'NO (some items were not scored; see Errors)'}",
        f"- judge rounds: {table.rounds_asked} asked, {table.rounds_saved} saved by the early decision "
        "(a binary majority stops once decided; the verdict is the same)",
        f"- grader attacks: {table.n_grader_attack} prediction(s) only addressed the judge (verdict words, "
        "self-grading, empty preambles, role markers, fake reference lines, instructions); each was scored 0 "
        "without asking the judge and counts in the accuracy as a wrong answer",
        f"- accuracy = mean over scored items (binary score, or rubric score / 5); errors are excluded and "
        f"counted; 95% CIs: percentile bootstrap, {table.n_boot} resamples (seed {table.seed}), stratified by "
        "task for the averages",
        "",
        "## Scores",
        "",
    ]
    head = ["task", "group", "N", "scored", "errors", "accuracy %", "95% CI"]
    head += [f"{p} accuracy %" for p in extra]
    rows = []
    for t in table.tasks:
        row = [t.task, t.group, str(t.n), str(t.n_scored), str(t.n_errors), _pct(t.accuracy), _pct_ci(t.ci)]
        row += [_pct(_task_accuracy(x, t.task)) for x in extra.values()]
        rows.append(row)
    summaries = [
        ("**overall (macro)**", table.macro(), lambda x: x.overall.accuracy),
        ("**LLM (macro)**", o.llm, lambda x: x.overall.llm.accuracy),
        ("**VLM (macro)**", o.vlm, lambda x: x.overall.vlm.accuracy),
        ("**micro (item-weighted)**", o.micro, lambda x: x.overall.micro.accuracy),
    ]
    for label, avg, pick in summaries:
        n = sum(table.task(name).n for name in avg.tasks)
        scored = sum(table.task(name).n_scored for name in avg.tasks)
        errors = sum(table.task(name).n_errors for name in avg.tasks)
        row = [
            label,
            f"{len(avg.tasks)} task(s)",
            str(n),
            str(scored),
            str(errors),
            _pct(avg.accuracy),
            _pct_ci(avg.ci),
        ]
        row += [_pct(pick(x)) for x in extra.values()]
        rows.append(row)
    lines += _md_table(head, rows)

    lines += ["", "## Errors", ""]
    if not any(t.n_errors for t in table.tasks) and all(t.accuracy is not None for t in table.tasks):
        lines.append("No errors: every item was scored.")
    else:
        lines += _md_table(
            ["task", "N", "scored", *ERROR_STATUSES, "accuracy"],
            [
                [t.task, str(t.n), str(t.n_scored), *(str(t.errors[s]) for s in ERROR_STATUSES), _pct(t.accuracy)]
                for t in table.tasks
                if t.n_errors or t.accuracy is None
            ]
            + [["**total**", "", "", *(str(table.errors[s]) for s in ERROR_STATUSES), ""]],
        )
        lines.append("")
        lines.append("Errors are excluded from the accuracies above, never counted as wrong answers.")

    lines += ["", "## By modality", ""]
    modality_rows = [
        [t.task, m.modality, str(m.n), str(m.n_scored), _pct(m.accuracy)]
        for t in table.tasks
        for m in t.modalities.values()
    ]
    if modality_rows:
        lines += _md_table(["task", "modality", "N", "scored", "accuracy %"], modality_rows)
    else:
        lines.append("No task recorded an imaging modality.")

    lines += ["", "## Beside the leaderboard", ""]
    if leaderboard is None:
        lines.append("No leaderboard was given.")
    else:
        lines += _comparison_markdown(table, leaderboard, meta["model"])
    return "\n".join(lines) + "\n"


def render_csv(table: ScoreTable, extra: Mapping[str, ScoreTable] | None = None) -> str:
    """Returns scores.csv: one row per task, then the overall, llm, vlm and micro rows; all fractions."""
    extra = dict(extra or {})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    head = ["row", "task", "group", "kind", "n", "n_scored", "n_errors", *ERROR_STATUSES]
    head += ["accuracy", "ci_low", "ci_high", *(f"accuracy_{p}" for p in extra)]
    writer.writerow(head)
    for t in table.tasks:
        writer.writerow(
            ["task", t.task, t.group, t.kind, t.n, t.n_scored, t.n_errors, *(t.errors[s] for s in ERROR_STATUSES)]
            + [_num(t.accuracy), *map(_num, _num_ci(t.ci)), *(_num(_task_accuracy(x, t.task)) for x in extra.values())]
        )
    o = table.overall
    summaries: list[tuple[str, Average, Any]] = [
        ("overall", table.macro(), lambda x: x.overall.accuracy),
        ("llm", o.llm, lambda x: x.overall.llm.accuracy),
        ("vlm", o.vlm, lambda x: x.overall.vlm.accuracy),
        ("micro", o.micro, lambda x: x.overall.micro.accuracy),
    ]
    for label, avg, pick in summaries:
        members = [table.task(name) for name in avg.tasks]
        writer.writerow(
            ["summary", label, "", "", sum(t.n for t in members), sum(t.n_scored for t in members)]
            + [sum(t.n_errors for t in members), *(sum(t.errors[s] for t in members) for s in ERROR_STATUSES)]
            + [_num(avg.accuracy), *map(_num, _num_ci(avg.ci)), *(_num(pick(x)) for x in extra.values())]
        )
    return buf.getvalue()


def render_score_txt(table: ScoreTable, meta: Mapping[str, str]) -> str:
    """Returns <model>_score.txt: the reference's per-task table, as fractions, with the summary rows."""
    width = max([len(t.task) for t in table.tasks] + [len("overall (macro)")])
    lines = [
        f"# {meta['model']} | protocol {meta['protocol']} | judge {meta['judge']} | {meta['timestamp']}",
        f"# fractions in [0, 1]; accuracy over scored items; complete: {table.overall.complete}",
        f"{'task':<{width}}  {'n':>6}  {'scored':>6}  {'accuracy':>8}  {'ci_low':>8}  {'ci_high':>8}",
    ]
    for t in table.tasks:
        low, high = _num_ci(t.ci)
        lines.append(
            f"{t.task:<{width}}  {t.n:>6}  {t.n_scored:>6}  {_fmt(t.accuracy):>8}  {_fmt(low):>8}  {_fmt(high):>8}"
        )
    o = table.overall
    for label, avg in (("overall (macro)", table.macro()), ("llm", o.llm), ("vlm", o.vlm), ("micro", o.micro)):
        low, high = _num_ci(avg.ci)
        lines.append(f"{label:<{width}}  {'':>6}  {'':>6}  {_fmt(avg.accuracy):>8}  {_fmt(low):>8}  {_fmt(high):>8}")
    return "\n".join(lines) + "\n"


def render_chart(
    table: ScoreTable, leaderboard: Leaderboard, model: str, comparison: tuple[list[str], Average] | None = None
) -> bytes:
    """Returns leaderboard.png as bytes: published models' averages and ours on the same tasks, ours highlighted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    comparison = comparison or _comparison(table, leaderboard)
    if comparison is None:
        raise ValueError("no evaluated task is on the leaderboard; nothing to compare")
    tasks, ours = comparison
    # (label, average, CI or None, is ours); sorted so the best model is on top
    entries = [(m, _published_mean(leaderboard, m, tasks), None, False) for m in leaderboard.models]
    entries.append((f"{model} (ours)", ours.accuracy, ours.ci, True))
    entries.sort(key=lambda e: e[1])

    fig = Figure(figsize=(8, 0.45 * len(entries) + 1.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ys = range(len(entries))
    values = [100 * e[1] for e in entries]
    ax.barh(ys, values, color=[OURS_COLOR if e[3] else PUBLISHED_COLOR for e in entries])
    for y, (_, value, ci, _) in zip(ys, entries, strict=True):
        right = value
        if ci is not None:
            # max(0, ...): a zero-width CI may sit an ulp off the estimate, and negative error bars are rejected
            low, high = max(0.0, 100 * (value - ci[0])), max(0.0, 100 * (ci[1] - value))
            ax.errorbar(100 * value, y, xerr=[[low], [high]], fmt="none", ecolor="black", capsize=3)
            right = ci[1]
        ax.text(100 * right + 0.8, y, f"{100 * value:.1f}", va="center", fontsize=8)
    ax.set_yticks(list(ys), [e[0] for e in entries])
    ax.set_xlabel("average accuracy (%); error bar: our bootstrap 95% CI")
    ax.set_xlim(0, 100)
    ax.set_title(chart_title(len(tasks), len(leaderboard.tasks)), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def chart_title(n_evaluated: int, n_published: int) -> str:
    """Returns the chart's title, which says whether the published averages were recomputed on a subset."""
    if n_evaluated == n_published:
        return f"Average accuracy over all {n_published} benchmarks (published AVG)"
    return (
        f"Average accuracy over the {n_evaluated} of {n_published} benchmarks evaluated\n"
        "(published models re-averaged over the same subset)"
    )


def _comparison(table: ScoreTable, leaderboard: Leaderboard) -> tuple[list[str], Average] | None:
    """Returns (tasks we scored that are on the leaderboard, in its order; our macro over them), or None."""
    scored = {t.task for t in table.tasks if t.accuracy is not None}
    tasks = [t for t in leaderboard.tasks if t in scored]
    return (tasks, table.macro(tasks)) if tasks else None


def _published_mean(leaderboard: Leaderboard, model: str, tasks: list[str]) -> float:
    """Returns the published AVG on the full set, else the model's mean of its cells over `tasks`."""
    if set(tasks) == set(leaderboard.tasks):
        return leaderboard.average[model]
    return leaderboard.mean(model, tasks)


def _comparison_markdown(table: ScoreTable, leaderboard: Leaderboard, model: str) -> list[str]:
    """Returns report.md's comparison section: one row per leaderboard task, ours beside the published cells."""
    comparison = _comparison(table, leaderboard)
    lines = [
        f"Published cells from {leaderboard.source} ({leaderboard.url}); only their overall averages are "
        "confirmed by public text, the per-benchmark cells are unverified. All figures in %.",
        "",
    ]
    head = ["benchmark", "task", f"{model} (ours)", *leaderboard.models]
    rows = []
    for task in leaderboard.tasks:
        ours = _task_accuracy(table, task)
        rows.append(
            [
                leaderboard.display[task],
                task,
                _pct(ours),
                *(_pct(leaderboard.cells[m][task]) for m in leaderboard.models),
            ]
        )
    if comparison is None:
        rows.append(["**average**", "", "n/a", *(_pct(leaderboard.average[m]) for m in leaderboard.models)])
        lines += _md_table(head, rows)
        lines += ["", "None of the evaluated tasks is on the leaderboard, so there is no like-for-like average."]
        return lines
    tasks, ours = comparison
    full = set(tasks) == set(leaderboard.tasks)
    label = "**average (published AVG)**" if full else f"**average over the {len(tasks)} evaluated**"
    rows.append(
        [label, "", _pct(ours.accuracy), *(_pct(_published_mean(leaderboard, m, tasks)) for m in leaderboard.models)]
    )
    lines += _md_table(head, rows)
    if not full:
        lines += [
            "",
            f"Only {len(tasks)} of the {len(leaderboard.tasks)} leaderboard tasks were scored; the average row "
            "re-averages every published model over those same tasks.",
        ]
    if unlisted := [t.task for t in table.tasks if t.accuracy is not None and t.task not in leaderboard.display]:
        lines += [
            "",
            f"Not on the published table, so not in the average row (they are in our overall average): "
            f"{', '.join(unlisted)}.",
        ]
    return lines


def _task_accuracy(table: ScoreTable, task: str) -> float | None:
    """Returns the table's accuracy for the task, None if it lacks the task or has no accuracy."""
    for t in table.tasks:
        if t.task == task:
            return t.accuracy
    return None


def _sample_line(sample: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """Returns one submission jsonl object; a non-finite or unscored score becomes null."""
    score = sample.get("score")
    unscored = sample.get("status", "scored") not in SCORED_STATUSES
    if unscored or (isinstance(score, float) and not math.isfinite(score)):
        score = None
    return {
        "id": sample["id"],
        "task": sample["task"],
        "question": sample.get("question", ""),
        "answer": sample.get("answer", ""),
        "prediction": sample.get("prediction", ""),
        "score": score,
        "status": sample.get("status", "scored"),
        "protocol": protocol,
    }


def _zip_bytes(members: Mapping[str, bytes]) -> bytes:
    """Returns a deflated zip archive holding the given {path: content} members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in members.items():
            zf.writestr(path, data)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> Path:
    """Returns `path` after writing `data` to a temporary file beside it and renaming it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Returns the lines of a markdown table."""
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _pct_ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _num_ci(ci: tuple[float, float] | None) -> tuple[float | None, float | None]:
    return (None, None) if ci is None else ci


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
