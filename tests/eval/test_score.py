"""Aggregation of judged rows into a ScoreTable, and the published leaderboard data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medix_ray.eval.score import ScoreTable, load_leaderboard, score_records

PUBLISHED_OVERALL = {  # docs/method.md §5, in %
    "MedVLM-R1 2B": 42.7,
    "BiMediX2 8B": 55.6,
    "HuatuoGPT-V 7B": 55.8,
    "MedGemma 4B": 56.6,
    "MedGemma 27B": 68.4,
    "MedMO 8B": 62.1,
    "MediX-R1 2B": 55.4,
    "MediX-R1 8B": 68.8,
    "MediX-R1 30B": 73.6,
}


def row(rid, task, score, *, kind="binary", group="llm", status="scored", modality=""):
    return {
        "id": rid,
        "task": task,
        "kind": kind,
        "group": group,
        "modality": modality,
        "protocol": "paper",
        "status": status,
        "score": score if status == "scored" else None,
        "rounds": [score],
        "error": "" if status == "scored" else "boom",
    }


def rows_ab():
    """Task A: binary [1, 0, 1] (LLM); task B: rubric [5, 0, 2.5] (VLM)."""
    a = [row(f"a_{k}", "a", s) for k, s in enumerate([1.0, 0.0, 1.0])]
    b = [row(f"b_{k}", "b", s, kind="rubric", group="vlm") for k, s in enumerate([5.0, 0.0, 2.5])]
    return a + b


def test_binary_accuracy_is_the_mean_of_scored_items():
    table = score_records(rows_ab())
    assert table.task("a").accuracy == pytest.approx(2 / 3)
    assert table.task("a").n == 3 and table.task("a").n_scored == 3


def test_rubric_accuracy_is_sum_over_five_n():
    assert score_records(rows_ab()).task("b").accuracy == pytest.approx(7.5 / 15)


def test_overall_is_the_unweighted_macro_mean_with_llm_vlm_and_micro_beside_it():
    rows = rows_ab() + [row("c_0", "c", 1.0)]  # task C: one item, accuracy 1
    o = score_records(rows, task_order=["a", "b", "c"]).overall
    assert o.accuracy == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert o.llm.accuracy == pytest.approx((2 / 3 + 1.0) / 2) and o.llm.tasks == ("a", "c")
    assert o.vlm.accuracy == pytest.approx(0.5) and o.vlm.tasks == ("b",)
    assert o.micro.accuracy == pytest.approx((1 + 0 + 1 + 1 + 0 + 0.5 + 1) / 7)
    assert o.complete and o.n_tasks == 3


def test_errors_are_excluded_from_the_mean_and_counted_by_status():
    rows = rows_ab() + [
        row("a_8", "a", None, status="judge_error"),
        row("a_9", "a", None, status="generation_error"),
        row("b_9", "b", None, kind="rubric", group="vlm", status="input_error"),
    ]
    table = score_records(rows)
    a = table.task("a")
    assert a.accuracy == pytest.approx(2 / 3)  # not 2/5
    assert a.n == 5 and a.n_scored == 3 and a.n_errors == 2
    assert a.errors == {"input_error": 0, "generation_error": 1, "judge_error": 1}
    assert table.errors == {"input_error": 1, "generation_error": 1, "judge_error": 1}
    assert not table.overall.complete
    assert table.overall.accuracy == pytest.approx((2 / 3 + 0.5) / 2)


def test_error_rows_may_carry_nan_scores_from_a_dataframe():
    rows = rows_ab() + [dict(row("a_9", "a", None, status="judge_error"), score=float("nan"))]
    assert score_records(rows).task("a").accuracy == pytest.approx(2 / 3)


def test_a_task_with_only_errors_has_no_accuracy_and_the_table_is_incomplete():
    rows = rows_ab() + [row(f"c_{k}", "c", None, status="judge_error") for k in range(2)]
    table = score_records(rows)
    c = table.task("c")
    assert c.accuracy is None and c.ci is None and c.n_errors == 2
    assert not table.overall.complete
    assert table.overall.accuracy == pytest.approx((2 / 3 + 0.5) / 2)  # averaged over tasks with an accuracy
    assert table.to_dict()["tasks"][2]["accuracy"] is None


def test_a_task_named_in_the_order_without_rows_is_reported_empty():
    table = score_records(rows_ab(), task_order=["b", "missing", "a"])
    assert [t.task for t in table.tasks] == ["b", "missing", "a"]
    assert table.task("missing").n == 0 and table.task("missing").accuracy is None
    assert not table.overall.complete


def test_tasks_outside_the_order_follow_it_sorted():
    table = score_records(rows_ab() + [row("c_0", "c", 1.0)], task_order=["b"])
    assert [t.task for t in table.tasks] == ["b", "a", "c"]


def test_duplicate_id_raises_naming_it():
    with pytest.raises(ValueError, match="'a_1'.*duplicate"):
        score_records(rows_ab() + [row("a_1", "a", 1.0)])


@pytest.mark.parametrize(
    "bad",
    [
        row("x_0", "x", 0.5),  # binary must be 0 or 1
        row("x_0", "x", 5.5, kind="rubric"),
        row("x_0", "x", -1.0, kind="rubric"),
        row("x_0", "x", float("nan"), kind="rubric"),
        row("x_0", "x", "1"),  # a string score is a parsing bug upstream (weakness 3)
        row("x_0", "x", None),  # scored without a score
        row("x_0", "x", 1.0, status="weird"),
        row("x_0", "x", 1.0, kind="likert"),
    ],
)
def test_invalid_rows_raise_naming_the_id(bad):
    with pytest.raises(ValueError, match="'x_0'"):
        score_records(rows_ab() + [bad])


def test_a_task_whose_rows_disagree_on_kind_raises():
    with pytest.raises(ValueError, match="task 'a'.*kind"):
        score_records(rows_ab() + [row("a_9", "a", 5.0, kind="rubric")])


def test_bootstrap_ci_contains_the_estimate_and_is_deterministic_with_a_seed():
    rng = np.random.default_rng(1)
    rows = [row(f"a_{k}", "a", float(v)) for k, v in enumerate(rng.integers(0, 2, 60))]
    rows += [row(f"b_{k}", "b", float(v), kind="rubric", group="vlm") for k, v in enumerate(rng.uniform(0, 5, 40))]
    t1 = score_records(rows, n_boot=500, seed=3)
    t2 = score_records(rows, n_boot=500, seed=3)
    t3 = score_records(rows, n_boot=500, seed=4)
    for t in t1.tasks:
        assert t.ci[0] <= t.accuracy <= t.ci[1] and t.ci[0] < t.ci[1]
    o = t1.overall
    for avg in (o, o.llm, o.vlm, o.micro):
        assert avg.ci[0] <= avg.accuracy <= avg.ci[1]
    assert t1.to_dict() == t2.to_dict()
    assert t1.overall.ci != t3.overall.ci


def test_a_task_ci_does_not_depend_on_the_other_tasks():
    alone = score_records([r for r in rows_ab() if r["task"] == "a"], seed=7).task("a").ci
    assert score_records(rows_ab(), seed=7).task("a").ci == alone


def test_ci_is_zero_width_when_all_scores_are_equal():
    rows = [row(f"b_{k}", "b", 3.0, kind="rubric", group="vlm") for k in range(10)]
    rows += [row(f"a_{k}", "a", 1.0) for k in range(10)]
    table = score_records(rows)
    low, high = table.task("b").ci
    assert low == high == pytest.approx(0.6)
    assert table.overall.ci[0] == pytest.approx(table.overall.ci[1]) == pytest.approx(0.8)


def test_overall_ci_is_a_stratified_bootstrap_narrower_than_a_single_task():
    rng = np.random.default_rng(0)
    rows = []
    for task in "abcd":
        rows += [row(f"{task}_{k}", task, float(v)) for k, v in enumerate(rng.integers(0, 2, 50))]
    table = score_records(rows)
    width = table.overall.ci[1] - table.overall.ci[0]
    assert all(width < t.ci[1] - t.ci[0] for t in table.tasks)  # averaging 4 independent tasks narrows it


def test_per_modality_breakdown_counts_all_items_and_averages_the_scored():
    rows = [
        row("s_0", "s", 1.0, group="vlm", modality="CT"),
        row("s_1", "s", 0.0, group="vlm", modality="CT"),
        row("s_2", "s", 1.0, group="vlm", modality="MRI"),
        row("s_3", "s", None, group="vlm", modality="MRI", status="judge_error"),
        row("s_4", "s", 1.0, group="vlm", modality=""),  # unknown: no modality row
    ]
    mods = score_records(rows).task("s").modalities
    assert set(mods) == {"CT", "MRI"}
    assert mods["CT"].accuracy == pytest.approx(0.5) and mods["CT"].n == 2
    assert mods["MRI"].accuracy == 1.0 and mods["MRI"].n == 2 and mods["MRI"].n_scored == 1


def test_to_dict_is_json_safe_and_holds_fractions():
    table = score_records(rows_ab() + [row("c_0", "c", None, status="judge_error")])
    data = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert data["overall"]["complete"] is False
    for t in data["tasks"]:
        assert t["accuracy"] is None or 0.0 <= t["accuracy"] <= 1.0
    assert isinstance(table, ScoreTable)


def test_macro_over_a_subset_matches_the_mean_of_those_tasks():
    table = score_records(rows_ab() + [row("c_0", "c", 1.0)])
    sub = table.macro(["a", "c"])
    assert sub.accuracy == pytest.approx((2 / 3 + 1.0) / 2) and sub.tasks == ("a", "c")
    assert sub.ci[0] <= sub.accuracy <= sub.ci[1]


def test_leaderboard_has_17_tasks_and_9_models():
    lb = load_leaderboard()
    assert len(lb.tasks) == 17 and len(lb.models) == 9
    assert list(lb.models) == list(PUBLISHED_OVERALL)
    assert lb.tasks[0] == "mmlu_clinical_knowledge" and lb.tasks[-1] == "mimic_cxr_report_generation"
    assert lb.display["usmle_sa"] == "USMLE-SA"
    assert sum(g == "llm" for g in lb.groups.values()) == 11
    assert all(0.0 <= v <= 1.0 for cells in lb.cells.values() for v in cells.values())
    assert "medix.cvmbzuai.com" in lb.url


def test_leaderboard_cells_reproduce_each_models_published_average():
    lb = load_leaderboard()
    for model, overall in PUBLISHED_OVERALL.items():
        mean = lb.mean(model)
        assert math.isclose(mean, lb.average[model], abs_tol=0.0015), model
        assert math.isclose(100 * mean, overall, abs_tol=0.15), model


def test_leaderboard_medix_30b_usmle_matches_the_press_figure():
    assert load_leaderboard().cells["MediX-R1 30B"]["usmle_sa"] == pytest.approx(0.951)


def test_judge_rounds_asked_and_saved_are_counted_into_the_table_and_its_json():
    rows = [
        dict(row("a_0", "a", 1.0), rounds=[1.0, 1.0], rounds_asked=2, rounds_saved=1),
        dict(row("a_1", "a", 0.0), rounds=[1.0, 0.0, 0.0], rounds_asked=3, rounds_saved=0),
        row("a_2", "a", 1.0),  # stored before the counts existed: its rounds count as asked, none saved
    ]
    table = score_records(rows, n_boot=10)
    assert (table.rounds_asked, table.rounds_saved) == (6, 1)
    assert table.to_dict()["judge_rounds"] == {"asked": 6, "saved": 1}
    with pytest.raises(ValueError, match="a_0.*rounds_saved"):
        score_records([dict(rows[0], rounds_saved=-1)], n_boot=10)
