"""The evaluation recipe: generate → judge → score → report, each phase resumable by item id.

    result = run_evaluation(cfg.eval, model="smollm2-135m-instruct")

- generate (`medix_ray.eval.phases`, on the Ray Data stages of `medix_ray.eval.stages`): the selected
  tasks' items not yet answered stream through Ray Data into a `CandidateGenerator` actor (in-process
  vLLM, greedy); answers land in `<output_dir>/<model>/generations/`. Items whose input is broken (a
  missing image) are recorded as `input_error` without being asked.
- judge: answered items not yet scored stream into a `JudgeWorker` actor (`medix_ray.eval.judge_worker`),
  which runs the protocol (`medix_ray.eval.protocol`) on each batch over one of two transports: a local
  judge model in an in-process vLLM engine with batched chat generation (`eval.judge_in_process`, the
  default), or an OpenAI-compatible URL (or the local model served on 127.0.0.1 when in-process is off)
  through the reward judge's async client. Results land in `judgments-<protocol>/`. Identical
  deterministic judgements are made once; binary majorities stop as soon as they are decided.
- overlapped (`eval.overlap_phases`, when both phases run and no judge server has to come up first):
  one Ray Data stream generate → judge, so a batch is judged as soon as it is answered and both
  engines start together. Each batch's answers are stored before its judgments.
- score and report: `medix_ray.eval.score` and `medix_ray.eval.report` on the stored rows.

Re-running with the same output folder continues: answered items are not asked again, scored items
are not judged again, and failed ones (generation or judge errors) are retried. An interruption
anywhere leaves whole part files only (`PhaseStore`), so a rerun asks no item twice and leaves none out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medix_ray.config import EvalConfig, RolloutConfig
from medix_ray.environment import init_ray
from medix_ray.eval import serve_judge
from medix_ray.eval.judge_worker import is_url, local_judge_dtype, protocols
from medix_ray.eval.phases import generate_and_judge, generate_phase, judge_phase
from medix_ray.eval.records import EvalItem
from medix_ray.eval.report import folder_safe
from medix_ray.eval.serve_judge import is_serve_judge
from medix_ray.eval.store import PhaseStore

logger = logging.getLogger(__name__)

PHASES = ("generate", "judge", "score", "report")


class EvalInputError(ValueError):
    """The evaluation cannot start with these inputs; the message says which and why."""


@dataclass
class EvalResult:
    """What a run produced: where, how many items each phase handled, and the score tables."""

    out_dir: Path
    items: int
    generated: int = 0  # items answered in this run
    judged: dict[str, int] = field(default_factory=dict)  # protocol -> items judged in this run
    tables: dict[str, Any] = field(default_factory=dict)  # protocol -> ScoreTable
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds in this run
    files: dict[str, Path] = field(default_factory=dict)


def load_items(cfg: EvalConfig) -> tuple[list[Any], list[EvalItem]]:
    """Returns (task specs, items) of the configured selection; raises TaskDataError for a bad local copy."""
    from medix_ray.eval.tasks import load_registry, load_task, select_tasks

    try:
        specs = select_tasks(cfg.tasks, load_registry())
    except ValueError as exc:
        raise EvalInputError(f"eval.tasks: {exc}") from exc
    items: list[EvalItem] = []
    for spec in specs:
        items.extend(load_task(spec, cfg.data_dir or None, cfg.limit))
    return specs, items


def served_model_name(base_url: str, api_key_env: str) -> str:
    """Returns the first model a judge endpoint lists; raises JudgeUnavailableError when it does not answer."""
    import os

    from openai import OpenAI

    from medix_ray.redact import redact_text, redact_url
    from medix_ray.rewards.judge import JudgeUnavailableError

    try:
        client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=10, max_retries=1)
        models = client.models.list().data
    except Exception as exc:
        raise JudgeUnavailableError(
            f"judge at {redact_url(base_url)} is unavailable: {type(exc).__name__}: {redact_text(str(exc))}"
        ) from exc
    if not models:
        raise JudgeUnavailableError(f"judge at {redact_url(base_url)} lists no model; set eval.judge_model")
    return models[0].id


def check_judge(base_url: str, model: str, cfg: EvalConfig) -> None:
    """Raises JudgeUnavailableError unless the judge answers one request."""
    from medix_ray.rewards.judge import OpenAIJudge

    judge = OpenAIJudge(base_url, model, api_key_env=cfg.judge_api_key_env, timeout_s=30, max_retries=0)
    asyncio.run(judge.check())


def connect_ray(address: str | None = None) -> None:
    """Joins the Ray cluster at `address`, or starts a local one sized for this machine, unless connected
    (`medix_ray.environment.init_ray`, the project's one policy). A small CPU machine is oversubscribed:
    Ray Data's tasks and the engine actor need whole CPUs (docs/cpu_notes.md)."""
    init_ray(address, log_to_driver=False)  # the candidate and judge engines' output stays in the Ray session logs


def _require_rows(items: Sequence[EvalItem], rows: Mapping[str, Any], what: str, phase: str) -> None:
    """Raises EvalInputError naming items the earlier phase has no row for (a gap is never silently skipped)."""
    missing = [it.id for it in items if it.id not in rows]
    if missing:
        raise EvalInputError(
            f"{len(missing)} item(s) have no {what} yet (e.g. {missing[:3]}); run the {phase} phase first"
        )


def run_evaluation(
    cfg: EvalConfig,
    model: str,
    *,
    phases: Iterable[str] = PHASES,
    rollout_cfg: RolloutConfig | None = None,
    progress: bool = True,
    selection: tuple[list[Any], list[EvalItem]] | None = None,
    address: str | None = None,
    pixel_bounds: Any = None,
) -> EvalResult:
    """Runs the selected phases for one candidate model; returns what they produced.

    `selection` gives (task specs, items) directly instead of loading `cfg.tasks` (benchmarks, tests).
    Generate and judge connect to Ray (`address`, or a local cluster) unless already connected.
    """
    from medix_ray.data.prompts import is_multimodal
    from medix_ray.eval.report import write_report
    from medix_ray.eval.score import load_leaderboard, score_records
    from medix_ray.models import resolve_model
    from medix_ray.rewards.judge_server import LocalJudgeServer
    from medix_ray.rollout.vllm_engine import load_prompt_renderer

    phases = list(phases)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise EvalInputError(f"unknown phase(s) {unknown}; expected some of {', '.join(PHASES)}")
    specs, items = selection or load_items(cfg)
    out = Path(cfg.output_dir) / folder_safe(model)
    result = EvalResult(out_dir=out, items=len(items))
    gen_store = PhaseStore(out / "generations")
    logger.info("evaluating %s on %d task(s), %d item(s); results in %s", model, len(specs), len(items), out)

    # A local judge model runs in-process in the judge actor (cfg.judge_in_process), or is served on
    # 127.0.0.1 for the run, starting now in the background so that its start-up overlaps generation.
    url_judge = is_url(cfg.judge) or is_serve_judge(cfg.judge)  # served elsewhere: no engine or server here
    in_process = not url_judge and cfg.judge_in_process
    server, server_up, waiter = None, None, None
    if "judge" in phases and not url_judge and not in_process:
        server = LocalJudgeServer(
            cfg.judge,
            max_model_len=cfg.max_model_len,
            dtype=local_judge_dtype(cfg),
            kv_cache_space_gib=(rollout_cfg or RolloutConfig()).kv_cache_space_gib,
        )
        server.launch()  # from this thread: see LocalJudgeServer.launch
        waiter = ThreadPoolExecutor(1, thread_name_prefix="judge-server")
        server_up = waiter.submit(server.wait_ready)
    # Judging starts on each batch as soon as it is answered, unless the judge server has to come up first.
    overlap = cfg.overlap_phases and "generate" in phases and "judge" in phases and server is None
    stores = {p: PhaseStore(out / f"judgments-{p}") for p in protocols(cfg)}

    def judge_endpoint() -> tuple[str, str]:
        """Returns (judge, model name) for JudgeWorker: a checked URL and its model, or the local model."""
        if is_serve_judge(cfg.judge):  # a Serve app's judge: checked on the cluster it runs on
            connect_ray(address)
            return cfg.judge, serve_judge.check(cfg.judge, cfg.judge_timeout_s).model
        if in_process:
            return cfg.judge, cfg.judge_model or folder_safe(cfg.judge)
        if server is not None:
            base_url, judge_model = server_up.result(), cfg.judge_model or server.served_model
        else:
            base_url = cfg.judge
            judge_model = cfg.judge_model or served_model_name(base_url, cfg.judge_api_key_env)
        check_judge(base_url, judge_model, cfg)
        return base_url, judge_model

    try:
        if "generate" in phases:
            model_path = resolve_model(model)
            image_tasks = sorted({it.task for it in items if it.image is not None})
            if image_tasks and not is_multimodal(load_prompt_renderer(model_path)):
                raise EvalInputError(
                    f"model {model!r} is text-only but tasks {image_tasks} have images; "
                    "evaluate a vision-language model or select --tasks llm"
                )
            t0 = time.monotonic()
            judge, judge_model = judge_endpoint() if overlap else ("", "")
            connect_ray(address)
            if overlap:
                result.generated, result.judged = generate_and_judge(
                    items, gen_store, stores, model_path, judge, judge_model, cfg, rollout_cfg, progress, pixel_bounds
                )
                result.seconds["generate+judge"] = time.monotonic() - t0
            else:
                result.generated = generate_phase(
                    items, gen_store, model_path, cfg, rollout_cfg, progress, pixel_bounds
                )
                result.seconds["generate"] = time.monotonic() - t0
        ids = {it.id for it in items}
        answers = {i: row for i, row in gen_store.rows().items() if i in ids}

        if "judge" in phases and not overlap:
            t0 = time.monotonic()
            judge, judge_model = judge_endpoint()
            _require_rows(items, answers, "answer", "generate")
            connect_ray(address)
            result.judged = judge_phase(answers, stores, judge, judge_model, cfg, progress, rollout_cfg)
            result.seconds["judge"] = time.monotonic() - t0
    finally:
        if server is not None:
            server.stop()  # also ends a wait_ready still polling
            with contextlib.suppress(Exception):  # a start-up failure was raised above, or is moot now
                server_up.result()
            waiter.shutdown()

    judgments: dict[str, dict[str, dict[str, Any]]] = {}  # protocol -> id -> judgment row
    if "score" in phases or "report" in phases:
        order = [s.name for s in specs]
        for protocol in protocols(cfg):
            rows = {i: r for i, r in PhaseStore(out / f"judgments-{protocol}").rows().items() if i in answers}
            _require_rows(items, rows, f"judgment ({protocol} protocol)", "judge")
            judgments[protocol] = rows
            result.tables[protocol] = score_records(rows.values(), task_order=order, n_boot=cfg.n_boot)

    if "report" in phases:
        primary = protocols(cfg)[0]
        judged = judgments[primary]
        samples = [
            dict(
                id=i,
                task=row["task"],
                question=row["question"],
                answer=row["answer"],
                prediction=row.get("prediction", ""),
                score=judged[i].get("score"),
                status=judged[i]["status"],
            )
            for i, row in answers.items()
        ]
        extra = {p: t for p, t in result.tables.items() if p != primary}
        result.files = write_report(
            out / "report",
            result.tables[primary],
            model=folder_safe(model),
            protocol=primary,
            judge=(
                serve_judge.report_label(cfg.judge)
                if is_serve_judge(cfg.judge)
                else cfg.judge
                if is_url(cfg.judge)
                else folder_safe(cfg.judge)
            ),
            samples=samples,
            leaderboard=load_leaderboard(),
            extra=extra or None,
        )
    return result
