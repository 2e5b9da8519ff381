"""The report files: markdown, CSV, JSON, chart and submission zip."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from PIL import Image

from medix_ray.eval.report import write_report
from medix_ray.eval.report_chart import chart_title, render_chart
from medix_ray.eval.score import load_leaderboard, score_records


def judged(rid, task, score, *, kind="binary", group="llm", status="scored", modality=""):
    return {
        "id": rid,
        "task": task,
        "kind": kind,
        "group": group,
        "modality": modality,
        "protocol": "paper",
        "status": status,
        "score": score if status == "scored" else None,
        "rounds": [],
        "error": "",
    }


@pytest.fixture
def rows():
    out = [judged(f"medqa_{k}", "medqa", s) for k, s in enumerate([1.0, 0.0, 1.0])]
    out.append(judged("medqa_3", "medqa", None, status="judge_error"))
    out += [
        judged(f"slake_vqa_{k}", "slake_vqa", s, group="vlm", modality=m)
        for k, (s, m) in enumerate([(1.0, "CT"), (0.0, "MRI")])
    ]
    return out


@pytest.fixture
def samples(rows):
    return [
        dict(
            id=r["id"], task=r["task"], question="q?", answer="a", prediction="p", score=r["score"], status=r["status"]
        )
        for r in rows
    ]


@pytest.fixture
def report(tmp_path, rows, samples):
    table = score_records(rows, task_order=["medqa", "slake_vqa"], n_boot=200)
    other = score_records([dict(r, protocol="independent") for r in rows], n_boot=200)
    files = write_report(
        tmp_path / "report",
        table,
        model="org/Tiny-VL",
        protocol="paper",
        judge="qwen3-14b",
        samples=samples,
        leaderboard=load_leaderboard(),
        extra={"independent": other},
    )
    return table, files


def test_all_files_are_written_and_no_temporary_file_is_left(report):
    _, files = report
    assert set(files) == {"report", "csv", "json", "png", "zip"}
    assert all(p.is_file() for p in files.values())
    assert [p.name for p in files["report"].parent.iterdir() if p.name.startswith(".")] == []


def test_markdown_has_the_task_summary_error_modality_and_comparison_sections(report):
    text = report[1]["report"].read_text()
    for needle in ("| medqa | llm | 4 | 3 | 1 | 66.7 |", "overall (macro)", "LLM (macro)", "micro (item-weighted)"):
        assert needle in text
    assert "## Errors" in text and "judge_error" in text
    assert "| slake_vqa | CT | 1 | 1 | 100.0 |" in text
    assert "independent accuracy %" in text
    assert "MediX-R1 30B" in text and "average over the 2 evaluated" in text
    table = report[0]
    assert f"judge rounds: {table.rounds_asked} asked, {table.rounds_saved} saved by the early decision" in text


def test_a_task_the_published_table_lacks_counts_in_our_overall_but_not_in_the_like_for_like_row(tmp_path, rows):
    rows = rows + [judged(f"mmmu_medical_val_{k}", "mmmu_medical_val", 1.0, group="vlm") for k in range(2)]
    table = score_records(rows, n_boot=50)
    assert table.overall.accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # ours: all three tasks
    files = write_report(
        tmp_path, table, model="m", protocol="paper", judge="j", samples=[], leaderboard=load_leaderboard()
    )
    text = files["report"].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| **average over the 2 evaluated**"))
    assert row.split("|")[3].strip() == f"{100 * (2 / 3 + 1 / 2) / 2:.1f}"  # medqa and slake_vqa only
    assert "Not on the published table, so not in the average row" in text and "mmmu_medical_val." in text


def test_csv_has_one_row_per_task_then_the_summaries_as_fractions(report):
    table, files = report
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert [(r["row"], r["task"]) for r in rows] == [
        ("task", "medqa"),
        ("task", "slake_vqa"),
        ("summary", "overall"),
        ("summary", "llm"),
        ("summary", "vlm"),
        ("summary", "micro"),
    ]
    assert float(rows[0]["accuracy"]) == pytest.approx(2 / 3, abs=1e-6)
    assert rows[0]["judge_error"] == "1" and rows[0]["n"] == "4"
    assert float(rows[2]["accuracy"]) == pytest.approx(table.overall.accuracy, abs=1e-6)
    assert "accuracy_independent" in rows[0]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)


def test_json_round_trips_the_table_with_run_metadata(report):
    table, files = report
    data = json.loads(files["json"].read_text())
    assert data["model"] == "org/Tiny-VL" and data["protocol"] == "paper" and data["judge"] == "qwen3-14b"
    assert data["timestamp"]
    assert {k: data[k] for k in table.to_dict()} == json.loads(json.dumps(table.to_dict()))
    assert set(data["extra"]) == {"independent"}


def test_png_is_a_valid_image(report):
    with Image.open(report[1]["png"]) as img:
        img.verify()
        assert img.format == "PNG"


def test_zip_follows_the_reference_layout_with_one_jsonl_line_per_sample(report, samples):
    with zipfile.ZipFile(report[1]["zip"]) as zf:
        assert sorted(zf.namelist()) == [
            "results/Tiny-VL/Tiny-VL.jsonl",
            "results/Tiny-VL/Tiny-VL_score.txt",
            "results/Tiny-VL/scores.json",
        ]
        lines = zf.read("results/Tiny-VL/Tiny-VL.jsonl").decode().splitlines()
        score_txt = zf.read("results/Tiny-VL/Tiny-VL_score.txt").decode()
    assert len(lines) == len(samples)
    first = json.loads(lines[0])
    assert {"id", "task", "question", "answer", "prediction", "score"} <= set(first)
    assert json.loads(lines[3])["score"] is None and json.loads(lines[3])["status"] == "judge_error"
    assert "medqa" in score_txt and "0.6667" in score_txt and "66.7" not in score_txt


def test_without_a_leaderboard_there_is_no_chart(tmp_path, rows):
    files = write_report(tmp_path, score_records(rows, n_boot=50), model="m", protocol="paper", judge="j", samples=None)
    assert "png" not in files
    with zipfile.ZipFile(files["zip"]) as zf:
        assert "results/m/m.jsonl" not in zf.namelist()


def test_the_chart_title_says_when_published_models_are_re_averaged_on_a_subset(rows):
    assert "re-averaged over the same subset" in chart_title(2, 17) and "2 of 17" in chart_title(2, 17)
    assert "published AVG" in chart_title(17, 17)
    assert render_chart(score_records(rows, n_boot=50), load_leaderboard(), "m").startswith(b"\x89PNG")


def test_a_full_evaluation_is_compared_with_the_published_averages(tmp_path):
    lb = load_leaderboard()
    rows = [judged(f"{t}_0", t, 1.0, group=lb.groups[t]) for t in lb.tasks]
    files = write_report(
        tmp_path, score_records(rows, n_boot=20), model="m", protocol="paper", judge="j", samples=None, leaderboard=lb
    )
    text = files["report"].read_text()
    assert "average (published AVG)" in text and "| 73.6 |" in text
    assert "re-averages" not in text


def test_rewriting_replaces_the_files(tmp_path, rows):
    table = score_records(rows, n_boot=50)
    write_report(tmp_path, table, model="m", protocol="paper", judge="j", samples=None)
    files = write_report(tmp_path, table, model="m", protocol="paper", judge="j", samples=None)
    assert files["report"].read_text().count("# Evaluation of m") == 1
