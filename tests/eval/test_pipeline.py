"""The judge worker against a scripted endpoint, and the command line's answers to bad input (no engines)."""

import pandas as pd

from medix_ray.cli import main
from medix_ray.config import EvalConfig
from medix_ray.eval.pipeline import JudgeWorker, is_url, judgment_row, protocols
from medix_ray.eval.report import folder_safe

ROW = {
    "id": "medqa_0",
    "task": "medqa",
    "kind": "binary",
    "group": "llm",
    "modality": "",
    "template": "base",
    "question": "Which drug?\n\nChoices:\nA. Aspirin\nB. Heparin",
    "answer": "Heparin",
    "prediction": "B",
    "status": "generated",
    "error": "",
}


def _worker(url, **kw):
    cfg = EvalConfig(judge_max_retries=1, judge_rounds=3, **kw)
    worker = JudgeWorker(url, "judge-model", cfg, "paper")
    worker.judge.backoff_s = 0.01
    return worker


def test_identical_items_are_judged_once(stub):
    handler, url = stub
    handler.default = '{"score": 1}'
    batch = pd.DataFrame([ROW, dict(ROW, id="medqa_1"), dict(ROW, id="medqa_2", prediction="A")])
    out = _worker(url)(batch).to_dict("records")
    assert [r["score"] for r in out] == [1.0, 1.0, 1.0]
    assert len(handler.requests) == 6  # 2 distinct items x 3 rounds
    assert sum(r["reused"] for r in out) == 1
    assert {r["protocol"] for r in out} == {"paper"}


def test_a_dead_judge_gives_counted_judge_errors_not_zeros(stub):
    handler, url = stub
    handler.default = 503
    out = _worker(url)(pd.DataFrame([ROW, dict(ROW, id="medqa_1", prediction="A")])).to_dict("records")
    assert [r["status"] for r in out] == ["judge_error", "judge_error"]
    assert all(r["score"] is None and "503" in r["error"] for r in out)


def test_failed_judgements_are_not_reused(stub):
    handler, url = stub
    handler.script = [500, 500]  # the first item's round 1 fails twice (1 retry)
    handler.default = '{"score": 0}'
    worker = _worker(url)
    first = worker(pd.DataFrame([ROW])).to_dict("records")[0]
    second = worker(pd.DataFrame([dict(ROW, id="medqa_1")])).to_dict("records")[0]
    assert first["status"] == "judge_error" and second["status"] == "scored" and not second["reused"]


def test_generation_failures_carry_their_status_into_the_judgment():
    row = dict(ROW, status="generation_error", error="item 'medqa_0': the prompt does not fit")
    out = judgment_row(row, "paper", {"status": row["status"], "error": row["error"]})
    assert out["status"] == "generation_error" and out["score"] is None and "does not fit" in out["error"]


def test_helpers():
    assert folder_safe("/models/MBZUAI/MediX-R1-8B/") == "MediX-R1-8B"
    assert folder_safe("org/name with space") == "name_with_space"
    assert is_url("https://judge/v1") and is_url("http://127.0.0.1:8000/v1") and not is_url("httpd-model")
    assert protocols(EvalConfig(protocol="both")) == ["paper", "independent"]


def test_cli_missing_local_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            "smollm2-135m-instruct",
            "--tasks",
            "medqa",
            "--data-dir",
            str(tmp_path),
            "--limit",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "medqa" in err and str(tmp_path) in err and "Traceback" not in err


def test_cli_unknown_task_is_a_clear_error(capsys):
    assert main(["evaluate", "--model", "m", "--tasks", "medqa,not_a_task"]) == 2
    assert "not_a_task" in capsys.readouterr().err


def test_cli_unreachable_judge_is_a_clear_error(tmp_path, capsys):
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    code = main(
        [
            "evaluate",
            "--model",
            "smollm2-135m-instruct",
            "--tasks",
            "medqa",
            "--data-dir",
            str(fixtures),
            "--output-dir",
            str(tmp_path),
            "--phases",
            "judge",
            "--judge",
            "http://127.0.0.1:9/v1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "judge at http://127.0.0.1:9/v1 is unavailable" in err


def test_stored_rows_have_no_nan_and_no_image():
    from medix_ray.eval.pipeline import _stored_row

    out = _stored_row({"id": "a", "score": float("nan"), "image": b"x", "n": 1.5})
    assert out == {"id": "a", "score": None, "n": 1.5}
