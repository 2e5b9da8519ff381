"""The generate and judge phases: what a run still has to do, given the stores, and the Ray Data streams doing it.

    asked = generate_phase(items, gen_store, model_path, cfg)                    # answers the unanswered items
    judged = judge_phase(answers, judge_stores, judge, judge_model, cfg)          # judges the unscored answers
    asked, judged = generate_and_judge(items, gen_store, judge_stores, ...)      # both, in one stream

A run resumes by item id: items answered by an earlier run are not asked again, items a protocol has scored
are not judged again, and failed ones (input, generation or judge errors) are recorded with their status
(`generation_todo`, `record_unanswered`, `scored_ids`) and retried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from medix_ray.config import EvalConfig, RolloutConfig
from medix_ray.eval.judge_worker import judgment_row
from medix_ray.eval.records import SCORED_STATUSES, EvalItem
from medix_ray.eval.stages import AnswerMissing, consume, generator_stage, judge_stage
from medix_ray.eval.store import PhaseStore, stored_row

logger = logging.getLogger(__name__)


def generation_todo(items: Sequence[EvalItem], store: PhaseStore) -> list[EvalItem]:
    """Records the unanswered items whose input is broken as input_error; returns the items still to answer."""
    done = {i for i, row in store.rows().items() if row.get("status") == "generated"}
    pending = [it for it in items if it.id not in done]
    broken = [it for it in pending if it.error]
    if broken:
        store.write(
            dict(stored_row(it.to_row()), prediction="", status="input_error", finish_reason="", n_tokens=0)
            for it in broken
        )
        logger.warning(
            "%d item(s) have broken inputs and are recorded as input_error, e.g. %s", len(broken), broken[0].error
        )
    return [it for it in pending if not it.error]


def record_unanswered(answers: Mapping[str, Mapping[str, Any]], stores: Mapping[str, PhaseStore]) -> None:
    """Writes, per protocol, the judgment of each stored answer that failed (its status), unless stored."""
    for protocol, store in stores.items():
        stored = store.rows()
        store.write(
            judgment_row(row, protocol, {"status": row["status"], "error": row.get("error", "")})
            for i, row in answers.items()
            if row["status"] != "generated" and stored.get(i, {}).get("status") != row["status"]
        )


def scored_ids(stores: Mapping[str, PhaseStore]) -> dict[str, set[str]]:
    """Returns {protocol: ids already scored}: the ids each protocol's judge skips."""
    return {p: {i for i, r in s.rows().items() if r.get("status") in SCORED_STATUSES} for p, s in stores.items()}


def generate_phase(
    items: Sequence[EvalItem],
    store: PhaseStore,
    model_path: str,
    cfg: EvalConfig,
    rollout_cfg: RolloutConfig | None = None,
    progress: bool = True,
    pixel_bounds: Any = None,
) -> int:
    """Answers the items that have no answer in the store yet; returns how many were asked.

    `pixel_bounds` (a `medix_ray.data.images.PixelBounds`) fits images to the training run's budget.
    """
    import ray

    from medix_ray.eval.generate import CandidateGenerator

    todo = generation_todo(items, store)
    if not todo:
        return 0
    source = ray.data.from_items([it.to_row() for it in todo])
    ds = generator_stage(source, CandidateGenerator, model_path, cfg, rollout_cfg, pixel_bounds)
    return consume(ds, len(todo), "generate", progress, gen_store=store, fresh={it.id for it in todo})[0]


def generate_and_judge(
    items: Sequence[EvalItem],
    gen_store: PhaseStore,
    judge_stores: Mapping[str, PhaseStore],
    model_path: str,
    judge: str,
    judge_model: str,
    cfg: EvalConfig,
    rollout_cfg: RolloutConfig | None = None,
    progress: bool = True,
    pixel_bounds: Any = None,
) -> tuple[int, dict[str, int]]:
    """Generates and judges as one Ray Data stream: each batch is judged as soon as it is answered.

    Both engines start together, the judge while the candidate answers. The stream carries the items not
    yet answered and the answered ones some protocol has not scored (an earlier run's); each batch is
    stored answers first, then judgments (`consume`). Returns (items answered, {protocol: items judged}).
    """
    import ray

    todo = generation_todo(items, gen_store)
    fresh = {it.id for it in todo}
    ids = {it.id for it in items}
    answers = {i: r for i, r in gen_store.rows().items() if i in ids}
    record_unanswered({i: r for i, r in answers.items() if i not in fresh}, judge_stores)
    scored = scored_ids(judge_stores)
    rows = [dict(it.to_row(), prediction="", finish_reason="", n_tokens=0, status="pending") for it in todo]
    rows += [
        dict(row, image=None)
        for i, row in answers.items()
        if i not in fresh and row["status"] == "generated" and any(i not in scored[p] for p in judge_stores)
    ]
    if not rows:
        return 0, {p: 0 for p in judge_stores}
    ds = generator_stage(ray.data.from_items(rows), AnswerMissing, model_path, cfg, rollout_cfg, pixel_bounds)
    ds = judge_stage(ds, judge, judge_model, cfg, scored, rollout_cfg)
    stores = dict(gen_store=gen_store, fresh=fresh, judge_stores=judge_stores)
    return consume(ds, len(rows), "generate+judge", progress, **stores)


def judge_phase(
    answers: Mapping[str, Mapping[str, Any]],
    stores: Mapping[str, PhaseStore],
    judge: str,
    judge_model: str,
    cfg: EvalConfig,
    progress: bool = True,
    rollout_cfg: RolloutConfig | None = None,
) -> dict[str, int]:
    """Judges the answered items each protocol's store has no score for; returns {protocol: items judged}.

    Items whose generation failed are recorded with that status, so that the report counts them.
    """
    import ray

    record_unanswered(answers, stores)
    scored = scored_ids(stores)
    todo = [
        dict(row)
        for i, row in answers.items()
        if row["status"] == "generated" and any(i not in scored[p] for p in stores)
    ]
    if not todo:
        return {p: 0 for p in stores}
    ds = judge_stage(ray.data.from_items(todo), judge, judge_model, cfg, scored, rollout_cfg)
    return consume(ds, len(todo), "judge", progress, judge_stores=stores)[1]
