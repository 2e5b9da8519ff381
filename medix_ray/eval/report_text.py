"""The report's tables as text: report.md (markdown, percentages), scores.csv and <model>_score.txt (fractions).

    markdown = render_markdown(table, meta, leaderboard, extra)   # meta: model, protocol, judge, timestamp
    csv_text = render_csv(table, extra)

report.md also sets our scores beside the leaderboard's published ones (`leaderboard_comparison`: the tasks we
scored that are on it, and our average over them; `published_mean`: a published model's average over them).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from medix_ray.eval.score import ERROR_STATUSES, Average, Leaderboard, ScoreTable


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


def leaderboard_comparison(table: ScoreTable, leaderboard: Leaderboard) -> tuple[list[str], Average] | None:
    """Returns (tasks we scored that are on the leaderboard, in its order; our macro over them), or None."""
    scored = {t.task for t in table.tasks if t.accuracy is not None}
    tasks = [t for t in leaderboard.tasks if t in scored]
    return (tasks, table.macro(tasks)) if tasks else None


def published_mean(leaderboard: Leaderboard, model: str, tasks: list[str]) -> float:
    """Returns the published AVG on the full set, else the model's mean of its cells over `tasks`."""
    if set(tasks) == set(leaderboard.tasks):
        return leaderboard.average[model]
    return leaderboard.mean(model, tasks)


def _comparison_markdown(table: ScoreTable, leaderboard: Leaderboard, model: str) -> list[str]:
    """Returns report.md's comparison section: one row per leaderboard task, ours beside the published cells."""
    comparison = leaderboard_comparison(table, leaderboard)
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
        [label, "", _pct(ours.accuracy), *(_pct(published_mean(leaderboard, m, tasks)) for m in leaderboard.models)]
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
