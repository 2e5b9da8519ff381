"""The judge worker against a scripted endpoint, and the command line's answers to bad input (no engines)."""

import json

import pandas as pd

from medix_ray.cli import main
from medix_ray.config import EvalConfig
from medix_ray.eval.judge_worker import JudgeWorker, is_url, judgment_row, protocols
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


def _worker(url, protocols=("paper",), skip=None, **kw):
    cfg = EvalConfig(judge_max_retries=1, judge_rounds=3, **kw)
    worker = JudgeWorker(url, "judge-model", cfg, protocols, skip)
    worker.transport.judge.backoff_s = 0.01
    return worker


def _judged(worker, rows, protocol="paper"):
    """Returns the judgment rows the worker attaches to a batch of rows ("" cells: skipped)."""
    out = worker(pd.DataFrame(rows))
    assert list(out["id"]) == [r["id"] for r in rows]  # the batch passes through
    return [json.loads(cell) if cell else None for cell in out[f"judgment_{protocol}"]]


def test_identical_items_are_judged_once(stub):
    handler, url = stub
    handler.default = '{"score": 1}'
    worker = _worker(url)
    out = _judged(worker, [ROW, dict(ROW, id="medqa_1"), dict(ROW, id="medqa_2", prediction="A")])
    assert [r["score"] for r in out] == [1.0, 1.0, 1.0]
    assert len(handler.requests) == 4  # 2 distinct items x 2 agreeing rounds (the third cannot change them)
    assert [r["reused"] for r in out] == [False, True, False]
    assert [(r["rounds_asked"], r["rounds_saved"]) for r in out] == [(2, 1)] * 3
    assert {r["protocol"] for r in out} == {"paper"}
    again = _judged(worker, [dict(ROW, id="medqa_3")])  # a later batch reuses the scored judgement
    assert again[0]["reused"] and again[0]["score"] == 1.0 and len(handler.requests) == 4


def test_early_decision_off_asks_every_round(stub):
    handler, url = stub
    handler.default = '{"score": 1}'
    out = _judged(_worker(url, judge_early_decision=False), [ROW])
    assert out[0]["rounds"] == [1.0, 1.0, 1.0] and out[0]["rounds_saved"] == 0 and len(handler.requests) == 3


def test_both_protocols_in_one_worker_and_scored_ids_skipped(stub):
    handler, url = stub
    handler.default = '{"score": 0}'
    worker = _worker(url, protocols=("paper", "independent"), skip={"paper": ["medqa_0"]})
    out = worker(pd.DataFrame([ROW, dict(ROW, id="medqa_1", prediction="A")]))
    paper = [json.loads(c) if c else None for c in out["judgment_paper"]]
    independent = [json.loads(c) for c in out["judgment_independent"]]
    assert paper[0] is None and paper[1]["score"] == 0.0  # medqa_0 was scored by an earlier run
    assert [r["score"] for r in independent] == [0.0, 0.0] and all(r["rounds_asked"] == 1 for r in independent)


def test_a_dead_judge_gives_counted_judge_errors_not_zeros(stub):
    handler, url = stub
    handler.default = 503
    out = _judged(_worker(url), [ROW, dict(ROW, id="medqa_1", prediction="A")])
    assert [r["status"] for r in out] == ["judge_error", "judge_error"]
    assert all(r["score"] is None and "503" in r["error"] for r in out)


def test_failed_judgements_are_not_reused(stub):
    handler, url = stub
    handler.script = [500, 500]  # the first item's round 1 fails twice (1 retry)
    handler.default = '{"score": 0}'
    worker = _worker(url)
    (first,) = _judged(worker, [ROW])
    (second,) = _judged(worker, [dict(ROW, id="medqa_1")])
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
    from medix_ray.eval.store import stored_row

    out = stored_row({"id": "a", "score": float("nan"), "image": b"x", "n": 1.5})
    assert out == {"id": "a", "score": None, "n": 1.5}


def test_a_failed_generation_gets_its_status_as_judgment_without_asking(stub):
    handler, url = stub
    failed = dict(ROW, id="medqa_1", status="generation_error", prediction="", error="prompt does not fit")
    out = _judged(_worker(url), [failed])
    assert out[0]["status"] == "generation_error" and "does not fit" in out[0]["error"]
    assert handler.requests == []


def test_answer_missing_generates_only_the_pending_rows():
    from medix_ray.eval.stages import AnswerMissing

    asked = []

    def fake_generator(batch):
        asked.extend(batch["id"])
        return batch.drop(columns=["image"]).assign(prediction="B", status="generated")

    stage = AnswerMissing.__new__(AnswerMissing)
    stage.generator = fake_generator
    pending = dict(ROW, id="medqa_2", status="pending", prediction="", image=None)
    out = stage(pd.DataFrame([dict(ROW, image=None), pending]))
    assert asked == ["medqa_2"]  # the row an earlier run answered passes through to the judge
    assert sorted(out["id"]) == ["medqa_0", "medqa_2"] and set(out["status"]) == {"generated"}
    assert "image" not in out.columns
