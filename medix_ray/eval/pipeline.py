"""The evaluation recipe: generate → judge → score → report, each phase resumable by item id.

    result = run_evaluation(cfg.eval, model="smollm2-135m-instruct")

- generate: the selected tasks' items not yet answered stream through Ray Data into
  `CandidateGenerator` actors (in-process vLLM, greedy); answers land in
  `<output_dir>/<model>/generations/` as they come. Items whose input is broken (a missing image)
  are recorded as `input_error` without being asked.
- judge: answered items not yet scored stream through Ray Data into `JudgeWorker` actors, which
  hold one async OpenAI-protocol client (the reward judge's) with bounded concurrency; results land
  in `judgments-<protocol>/`. The judge is a URL, or an offline model we serve on 127.0.0.1 with
  prefix caching for the run. Identical deterministic judgements are made once.
- score and report: `medix_ray.eval.score` and `medix_ray.eval.report` on the stored rows.

Re-running with the same output folder continues: answered items are not asked again, scored items
are not judged again, and failed ones (generation or judge errors) are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medix_ray.cluster import worker_env
from medix_ray.config import EvalConfig, RolloutConfig
from medix_ray.eval.judging import item_prompt, judge_item, work_key
from medix_ray.eval.records import EvalItem
from medix_ray.eval.report import folder_safe
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


def is_url(judge: str) -> bool:
    """Returns whether eval.judge names an endpoint (else it names a model we serve for the run)."""
    return judge.startswith(("http://", "https://"))


def protocols(cfg: EvalConfig) -> list[str]:
    return ["paper", "independent"] if cfg.protocol == "both" else [cfg.protocol]


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


def _item_row(item: EvalItem) -> dict[str, Any]:
    row = asdict(item)
    row["choices"] = list(item.choices)
    return row


def _stored_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a row as it is stored: JSON-safe, without image bytes (pandas' NaN for a missing score is None)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k != "image"}


def _stream(ds: Any, store: PhaseStore, total: int, desc: str, progress: bool) -> int:
    """Writes each batch the dataset yields as one part file; returns the number of rows written."""
    from tqdm import tqdm

    written = 0
    with tqdm(total=total, desc=desc, unit="item", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            records = batch.to_dict("records")
            store.write(_stored_row(r) for r in records)
            written += len(records)
            bar.update(len(records))
    return written


def generate_phase(
    items: Sequence[EvalItem],
    store: PhaseStore,
    model_path: str,
    cfg: EvalConfig,
    rollout_cfg: RolloutConfig | None = None,
    progress: bool = True,
) -> int:
    """Answers the items that have no answer in the store yet; returns how many were asked."""
    import ray

    from medix_ray.eval.generate import CandidateGenerator

    done = {i for i, row in store.rows().items() if row.get("status") == "generated"}
    pending = [it for it in items if it.id not in done]
    broken = [it for it in pending if it.error]
    if broken:
        store.write(
            dict(_stored_row(_item_row(it)), prediction="", status="input_error", finish_reason="", n_tokens=0)
            for it in broken
        )
        logger.warning(
            "%d item(s) have broken inputs and are recorded as input_error, e.g. %s", len(broken), broken[0].error
        )
    todo = [_item_row(it) for it in pending if not it.error]
    if not todo:
        return 0
    ds = ray.data.from_items(todo).map_batches(
        CandidateGenerator,
        fn_constructor_kwargs=dict(
            model_path=model_path,
            max_tokens=cfg.max_tokens,
            max_model_len=cfg.max_model_len,
            system_prompt=cfg.system_prompt,
            force_think=cfg.force_think,
            rollout_cfg=rollout_cfg,
        ),
        batch_size=cfg.gen_batch_size,
        batch_format="pandas",
        concurrency=1,
        num_cpus=cfg.gen_num_cpus,
        num_gpus=cfg.gen_num_gpus or None,
    )
    return _stream(ds, store, len(todo), "generate", progress)


class JudgeWorker:
    """Judges batches of answered items; a Ray Data `map_batches` class UDF (batch_format="pandas")."""

    def __init__(self, base_url: str, model: str, cfg: EvalConfig, protocol: str):
        from medix_ray.rewards.judge import OpenAIJudge

        self.cfg = cfg
        self.protocol = protocol
        self.judge = OpenAIJudge(
            base_url,
            model,
            api_key_env=cfg.judge_api_key_env,
            max_tokens=cfg.judge_max_tokens,
            timeout_s=cfg.judge_timeout_s,
            max_retries=cfg.judge_max_retries,
            concurrency=cfg.judge_concurrency,
        )
        self.loop = asyncio.new_event_loop()
        # Deterministic judgements of an identical (template, question, answer, prediction) are made once.
        self.done: dict[str, asyncio.Future] = {}

    async def _judge(self, row: Mapping[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        key = work_key(self.protocol, cfg.judge_rounds, cfg.vote_temperature, self.judge.model, item_prompt(row))
        if key is not None and key in self.done:
            return dict(await self.done[key], reused=True)
        task = asyncio.ensure_future(
            judge_item(
                self.judge,
                row,
                protocol=self.protocol,
                rounds=cfg.judge_rounds,
                max_tokens=cfg.judge_max_tokens,
                vote_temperature=cfg.vote_temperature,
                structured=cfg.judge_structured,
            )
        )
        if key is not None:
            self.done[key] = task
        result = await task
        if key is not None and result["status"] != "scored":
            self.done.pop(key, None)  # a failure is not reused: the next identical item asks again
        return dict(result, reused=False)

    def __call__(self, batch):
        """Returns one judgment row per answered row: id, task, kind, group, modality, protocol, status, score, ..."""
        import pandas as pd

        rows = batch.to_dict("records")

        async def all_rows() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(self._judge(r) for r in rows)))

        results = self.loop.run_until_complete(all_rows())
        return pd.DataFrame([judgment_row(row, self.protocol, res) for row, res in zip(rows, results, strict=True)])


def judgment_row(row: Mapping[str, Any], protocol: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the stored judgment of one item: its identity, the protocol, and the judge's result."""
    keep = ("id", "task", "kind", "group", "modality")
    return {
        **{k: row[k] for k in keep},
        "protocol": protocol,
        "status": result["status"],
        "score": result.get("score"),
        "rounds": list(result.get("rounds") or []),
        "replies": list(result.get("replies") or []),
        "reused": bool(result.get("reused", False)),
        "error": result.get("error") or row.get("error") or "",
    }


def judge_phase(
    answers: Mapping[str, Mapping[str, Any]],
    store: PhaseStore,
    base_url: str,
    judge_model: str,
    cfg: EvalConfig,
    protocol: str,
    progress: bool = True,
) -> int:
    """Judges the answered items the store has no score for; returns how many were judged.

    Items whose generation failed are recorded with that status, so that the report counts them.
    """
    import ray

    stored = store.rows()
    unanswered = [
        judgment_row(row, protocol, {"status": row["status"], "error": row.get("error", "")})
        for i, row in answers.items()
        if row["status"] != "generated" and stored.get(i, {}).get("status") != row["status"]
    ]
    store.write(unanswered)
    todo = [
        dict(row)
        for i, row in answers.items()
        if row["status"] == "generated" and stored.get(i, {}).get("status") != "scored"
    ]
    if not todo:
        return 0
    ds = ray.data.from_items(todo).map_batches(
        JudgeWorker,
        fn_constructor_kwargs=dict(base_url=base_url, model=judge_model, cfg=cfg, protocol=protocol),
        batch_size=cfg.judge_batch_size,
        batch_format="pandas",
        concurrency=1,
        num_cpus=0.25,
    )
    return _stream(ds, store, len(todo), f"judge ({protocol})", progress)


def served_model_name(base_url: str, api_key_env: str) -> str:
    """Returns the first model a judge endpoint lists; raises JudgeUnavailableError when it does not answer."""
    import os

    from openai import OpenAI

    from medix_ray.rewards.judge import JudgeUnavailableError

    try:
        client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=10, max_retries=1)
        models = client.models.list().data
    except Exception as exc:
        raise JudgeUnavailableError(f"judge at {base_url} is unavailable: {type(exc).__name__}: {exc}") from exc
    if not models:
        raise JudgeUnavailableError(f"judge at {base_url} lists no model; set eval.judge_model")
    return models[0].id


def check_judge(base_url: str, model: str, cfg: EvalConfig) -> None:
    """Raises JudgeUnavailableError unless the judge answers one request."""
    from medix_ray.rewards.judge import OpenAIJudge

    judge = OpenAIJudge(base_url, model, api_key_env=cfg.judge_api_key_env, timeout_s=30, max_retries=0)
    asyncio.run(judge.check())


def connect_ray(address: str | None = None, kv_cache_space_gib: int = 1) -> None:
    """Connects to the Ray cluster at `address`, or starts a local one sized for this machine, unless connected."""
    import os

    import ray

    if ray.is_initialized():
        return
    # A small CPU machine is oversubscribed: Ray Data's tasks and the engine actor need whole CPUs
    # (research/feasibility.md), and the engine and the judge server time-share the cores anyway.
    num_cpus = None if address else max(os.cpu_count() or 1, 4)
    ray.init(
        address=address,
        num_cpus=num_cpus,
        runtime_env={"env_vars": worker_env(kv_cache_space_gib)},
        log_to_driver=False,
    )


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

    # A judge we serve ourselves starts now, in the background: its start-up overlaps generation.
    server, server_up, waiter = None, None, None
    if "judge" in phases and not is_url(cfg.judge):
        server = LocalJudgeServer(cfg.judge, max_model_len=cfg.max_model_len)
        server.launch()  # from this thread: see LocalJudgeServer.launch
        waiter = ThreadPoolExecutor(1, thread_name_prefix="judge-server")
        server_up = waiter.submit(server.wait_ready)
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
            connect_ray(address, rollout_cfg.kv_cache_space_gib if rollout_cfg else 1)
            result.generated = generate_phase(items, gen_store, model_path, cfg, rollout_cfg, progress)
            result.seconds["generate"] = time.monotonic() - t0
        ids = {it.id for it in items}
        answers = {i: row for i, row in gen_store.rows().items() if i in ids}

        if "judge" in phases:
            t0 = time.monotonic()
            if server is not None:
                base_url, judge_model = server_up.result(), cfg.judge_model or server.served_model
            else:
                base_url = cfg.judge
                judge_model = cfg.judge_model or served_model_name(base_url, cfg.judge_api_key_env)
            check_judge(base_url, judge_model, cfg)
            _require_rows(items, answers, "answer", "generate")
            connect_ray(address)
            for protocol in protocols(cfg):
                store = PhaseStore(out / f"judgments-{protocol}")
                result.judged[protocol] = judge_phase(answers, store, base_url, judge_model, cfg, protocol, progress)
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
            judge=cfg.judge if is_url(cfg.judge) else folder_safe(cfg.judge),
            samples=samples,
            leaderboard=load_leaderboard(),
            extra=extra or None,
        )
    return result
