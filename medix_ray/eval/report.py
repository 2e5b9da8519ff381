"""The report phase: a ScoreTable (and the judged samples) in, the files a reader and the leaderboard need out.

    <out_dir>/report.md        per-task table (N, scored, errors, accuracy %, 95% CI), overall / LLM / VLM /
                               micro rows, error summary, per-modality table, comparison with the leaderboard
    <out_dir>/scores.csv       the per-task table and the summary rows, as fractions
    <out_dir>/scores.json      ScoreTable.to_dict() plus model, protocol, judge, timestamp (and extra protocols)
    <out_dir>/leaderboard.png  overall averages of the published models and ours (ours highlighted, with its CI)
    <out_dir>/submission.zip   see below

The tables are rendered by medix_ray/eval/report_text.py and the chart by medix_ray/eval/report_chart.py; this
module writes them. Every file is written to a temporary file in `out_dir` and renamed into place, so a crash
leaves the old file or the new one, never half of one. report.md shows percentages; every machine-readable file holds
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
from medix_ray.eval.report_chart import render_chart
from medix_ray.eval.report_text import leaderboard_comparison, render_csv, render_markdown, render_score_txt
from medix_ray.eval.score import Leaderboard, ScoreTable
from medix_ray.redact import redact_url

logger = logging.getLogger(__name__)


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
    comparison = leaderboard_comparison(table, leaderboard) if leaderboard is not None else None

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
