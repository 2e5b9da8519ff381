"""The report's leaderboard.png: the published models' averages and ours on the same tasks, ours highlighted."""

from __future__ import annotations

import io

from medix_ray.eval.report_text import leaderboard_comparison, published_mean
from medix_ray.eval.score import Average, Leaderboard, ScoreTable

OURS_COLOR = "#d62728"
PUBLISHED_COLOR = "#9aa5b1"


def render_chart(
    table: ScoreTable, leaderboard: Leaderboard, model: str, comparison: tuple[list[str], Average] | None = None
) -> bytes:
    """Returns leaderboard.png as bytes: published models' averages and ours on the same tasks, ours highlighted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    comparison = comparison or leaderboard_comparison(table, leaderboard)
    if comparison is None:
        raise ValueError("no evaluated task is on the leaderboard; nothing to compare")
    tasks, ours = comparison
    # (label, average, CI or None, is ours); sorted so the best model is on top
    entries = [(m, published_mean(leaderboard, m, tasks), None, False) for m in leaderboard.models]
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
