"""The evaluation recipe: generate → judge → score → report, each phase resumable by item id.

    result = run_evaluation(cfg.eval, model="smollm2-135m-instruct")

- generate: the selected tasks' items not yet answered stream through Ray Data into a
  `CandidateGenerator` actor (in-process vLLM, greedy); answers land in
  `<output_dir>/<model>/generations/`. Items whose input is broken (a missing image) are recorded as
  `input_error` without being asked.
- judge: answered items not yet scored stream into a `JudgeWorker` actor, which runs the protocol
  (`medix_ray.eval.protocol`) on each batch over one of two transports: a local judge model in an
  in-process vLLM engine with batched chat generation (`eval.judge_in_process`, the default), or an
  OpenAI-compatible URL (or the local model served on 127.0.0.1 when in-process is off) through the
  reward judge's async client. Results land in `judgments-<protocol>/`. Identical deterministic
  judgements are made once; binary majorities stop as soon as they are decided.
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
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medix_ray.cluster import local_dashboard, worker_env
from medix_ray.config import EvalConfig, RolloutConfig
from medix_ray.eval import serve_judge
from medix_ray.eval.judging import item_prompt, work_key
from medix_ray.eval.records import SCORED_STATUSES, EvalItem
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


def is_url(judge: str) -> bool:
    """Returns whether eval.judge names an endpoint (else it names a model we serve for the run)."""
    return judge.startswith(("http://", "https://"))


def local_judge_dtype(cfg: EvalConfig) -> str:
    """Returns the dtype of the engine evaluation starts for a local judge model (in-process or served)."""
    return cfg.judge_dtype or cfg.engine_dtype


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


def _generation_todo(items: Sequence[EvalItem], store: PhaseStore) -> list[EvalItem]:
    """Records the unanswered items whose input is broken as input_error; returns the items still to answer."""
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
    return [it for it in pending if not it.error]


class AnswerMissing:
    """The generate stage of the overlapped stream: `CandidateGenerator` for the rows not yet answered
    (status "pending"); rows answered by an earlier run (status "generated") pass through to the judge."""

    def __init__(self, **kwargs: Any):
        from medix_ray.eval.generate import CandidateGenerator

        self.generator = CandidateGenerator(**kwargs)

    def __call__(self, batch):
        import pandas as pd

        answered = batch["status"] == "generated"
        parts = [batch[answered].drop(columns=["image"])]
        if (~answered).any():
            parts.append(self.generator(batch[~answered]))
        return pd.concat(parts, ignore_index=True)


def _generator_stage(
    ds: Any, udf: Any, model_path: str, cfg: EvalConfig, rollout_cfg: RolloutConfig | None, pixel_bounds: Any
) -> Any:
    """Returns `ds` followed by the generate stage: one candidate engine actor running `udf`."""
    return ds.map_batches(
        udf,
        fn_constructor_kwargs=dict(
            model_path=model_path,
            max_tokens=cfg.max_tokens,
            max_model_len=cfg.max_model_len,
            system_prompt=cfg.system_prompt,
            force_think=cfg.force_think,
            rollout_cfg=rollout_cfg,
            pixel_bounds=pixel_bounds,
            dtype=cfg.engine_dtype,
        ),
        batch_size=cfg.gen_batch_size,
        batch_format="pandas",
        concurrency=1,
        num_cpus=cfg.gen_num_cpus,
        num_gpus=cfg.gen_num_gpus or None,
    )


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

    todo = _generation_todo(items, store)
    if not todo:
        return 0
    source = ray.data.from_items([_item_row(it) for it in todo])
    ds = _generator_stage(source, CandidateGenerator, model_path, cfg, rollout_cfg, pixel_bounds)
    return _consume(ds, len(todo), "generate", progress, gen_store=store, fresh={it.id for it in todo})[0]


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
    stored answers first, then judgments (`_consume`). Returns (items answered, {protocol: items judged}).
    """
    import ray

    todo = _generation_todo(items, gen_store)
    fresh = {it.id for it in todo}
    ids = {it.id for it in items}
    answers = {i: r for i, r in gen_store.rows().items() if i in ids}
    _record_unanswered({i: r for i, r in answers.items() if i not in fresh}, judge_stores)
    scored = _scored_ids(judge_stores)
    rows = [dict(_item_row(it), prediction="", finish_reason="", n_tokens=0, status="pending") for it in todo]
    rows += [
        dict(row, image=None)
        for i, row in answers.items()
        if i not in fresh and row["status"] == "generated" and any(i not in scored[p] for p in judge_stores)
    ]
    if not rows:
        return 0, {p: 0 for p in judge_stores}
    ds = _generator_stage(ray.data.from_items(rows), AnswerMissing, model_path, cfg, rollout_cfg, pixel_bounds)
    ds = _judge_stage(ds, judge, judge_model, cfg, scored, rollout_cfg)
    stores = dict(gen_store=gen_store, fresh=fresh, judge_stores=judge_stores)
    return _consume(ds, len(rows), "generate+judge", progress, **stores)


JUDGMENT_COLUMN = "judgment_{}"  # a judge stage's output column per protocol: the judgment row as JSON


class JudgeWorker:
    """Judges batches of generated rows under one or more protocols; a Ray Data `map_batches` class UDF.

    `judge` is a URL (chats go over HTTP through the reward judge's `OpenAIJudge`, `model` is the served
    name) or an offline model name or path (chats go to an in-process vLLM engine this actor holds,
    `medix_ray.eval.local_judge`). Either way `medix_ray.eval.protocol.judge_rows` runs the protocol on the
    whole batch. Each output row is the input row plus, per protocol, the column `judgment_<protocol>`
    holding its judgment row as JSON ("" for an id in `skip[protocol]`, already scored by an earlier run).
    Rows whose generation failed get a judgment with that status. Deterministic judgements of an identical
    (template, question, answer, prediction) are made once per actor and reused.
    """

    def __init__(
        self,
        judge: str,
        model: str,
        cfg: EvalConfig,
        protocols: Sequence[str],
        skip: Mapping[str, Iterable[str]] | None = None,
        rollout_cfg: RolloutConfig | None = None,
    ):
        from medix_ray.eval.protocol import HTTPTransport

        self.cfg = cfg
        self.protocols = list(protocols)
        self.skip = {p: set((skip or {}).get(p, ())) for p in self.protocols}
        if is_serve_judge(judge):  # the reward application's judge deployment (medix_ray/eval/serve_judge.py)
            from medix_ray.eval.serve_judge import ServeTransport

            self.transport = ServeTransport.connect(judge, cfg)
        elif is_url(judge):
            from medix_ray.rewards.judge import OpenAIJudge

            self.transport = HTTPTransport(
                OpenAIJudge(
                    judge,
                    model,
                    api_key_env=cfg.judge_api_key_env,
                    max_tokens=cfg.judge_max_tokens,
                    timeout_s=cfg.judge_timeout_s,
                    max_retries=cfg.judge_max_retries,
                    concurrency=cfg.judge_concurrency,
                )
            )
        else:
            from medix_ray.eval.local_judge import InProcessTransport

            self.transport = InProcessTransport.start(
                judge, max_model_len=cfg.max_model_len, rollout_cfg=rollout_cfg, dtype=local_judge_dtype(cfg)
            )
        self.model = model
        self.loop = asyncio.new_event_loop()
        self.done: dict[str, dict[str, Any]] = {}  # work key -> a scored result, reused for identical items

    def judge_rows(self, rows: Sequence[Mapping[str, Any]], protocol: str) -> list[dict[str, Any]]:
        """Returns the judgment row of each generated row under `protocol` (reusing identical judgements)."""
        from medix_ray.eval.protocol import judge_rows

        cfg = self.cfg
        keys = [work_key(protocol, cfg.judge_rounds, cfg.vote_temperature, self.model, item_prompt(r)) for r in rows]
        results: list[dict[str, Any] | None] = [None] * len(rows)
        first: dict[str, int] = {}  # work key -> the row of this batch that asks for it
        asking: list[int] = []
        for i, key in enumerate(keys):
            if key is not None and key in self.done:
                results[i] = dict(self.done[key], reused=True)
            elif key is None or key not in first:
                if key is not None:
                    first[key] = i
                asking.append(i)
        asked = self.loop.run_until_complete(
            judge_rows(
                self.transport,
                [rows[i] for i in asking],
                protocol=protocol,
                rounds=cfg.judge_rounds,
                max_tokens=cfg.judge_max_tokens,
                max_retries=cfg.judge_max_retries,
                vote_temperature=cfg.vote_temperature,
                structured=cfg.judge_structured,
                early_decision=cfg.judge_early_decision,
            )
        )
        for i, res in zip(asking, asked, strict=True):
            results[i] = dict(res, reused=False)
            if keys[i] is not None and res["status"] == "scored":  # a failure is not reused by later batches
                self.done[keys[i]] = res
        for i, key in enumerate(keys):
            if results[i] is None:  # a copy of an item asked in this batch shares its result
                results[i] = dict(results[first[key]], reused=True)
        return [judgment_row(r, protocol, res) for r, res in zip(rows, results, strict=True)]

    def __call__(self, batch):
        """Returns the batch with one `judgment_<protocol>` column per protocol (JSON text, "" when skipped)."""
        rows = batch.to_dict("records")
        out = batch.copy()
        for protocol in self.protocols:
            column: list[str] = [""] * len(rows)
            todo = [i for i, r in enumerate(rows) if r["id"] not in self.skip[protocol]]
            generated = [i for i in todo if rows[i]["status"] == "generated"]
            for i in todo:
                if rows[i]["status"] != "generated":
                    row = rows[i]
                    column[i] = _dump(judgment_row(row, protocol, {"status": row["status"], "error": row.get("error")}))
            if generated:
                for i, judged in zip(generated, self.judge_rows([rows[i] for i in generated], protocol), strict=True):
                    column[i] = _dump(judged)
            out[JUDGMENT_COLUMN.format(protocol)] = column
        return out


def _dump(row: Mapping[str, Any]) -> str:
    import json

    return json.dumps(_stored_row(row), ensure_ascii=False, allow_nan=False)


def judgment_row(row: Mapping[str, Any], protocol: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the stored judgment of one item: its identity, the protocol, and the judge's result.

    `rounds_asked` is how many rounds (or votes) the judge answered; `rounds_saved` how many the early
    decision did not need to ask (`medix_ray.eval.protocol.decided`).
    """
    keep = ("id", "task", "kind", "group", "modality")
    return {
        **{k: row[k] for k in keep},
        "protocol": protocol,
        "status": result["status"],
        "score": result.get("score"),
        "rounds": list(result.get("rounds") or []),
        "replies": list(result.get("replies") or []),
        "rounds_asked": int(result.get("rounds_asked") or 0),
        "rounds_saved": int(result.get("rounds_saved") or 0),
        "reused": bool(result.get("reused", False)),
        "error": result.get("error") or row.get("error") or "",
    }


def _judge_stage(
    ds: Any,
    judge: str,
    model: str,
    cfg: EvalConfig,
    skip: Mapping[str, set[str]],
    rollout_cfg: RolloutConfig | None = None,
) -> Any:
    """Returns `ds` followed by the judge stage: one JudgeWorker actor for all of cfg's protocols
    (`rollout_cfg`: an in-process judge engine's KV cache size)."""
    in_process = not is_url(judge) and not is_serve_judge(judge)
    return ds.map_batches(
        JudgeWorker,
        fn_constructor_kwargs=dict(
            judge=judge, model=model, cfg=cfg, protocols=protocols(cfg), skip=skip, rollout_cfg=rollout_cfg
        ),
        batch_size=cfg.judge_batch_size,
        batch_format="pandas",
        concurrency=1,
        # An in-process judge holds an engine; a client needs little.
        num_cpus=cfg.judge_num_cpus if in_process else 0.25,
        num_gpus=(cfg.judge_num_gpus or None) if in_process else None,
    )


def _consume(
    ds: Any,
    total: int,
    desc: str,
    progress: bool,
    gen_store: PhaseStore | None = None,
    fresh: set[str] = frozenset(),
    judge_stores: Mapping[str, PhaseStore] | None = None,
) -> tuple[int, dict[str, int]]:
    """Stores each batch the dataset yields; returns (rows generated, {protocol: rows judged}).

    Per batch, the rows whose id is in `fresh` go to the generations store first, then each protocol's
    judgments to its store, each as one atomic part. An interruption in between leaves answers without
    judgments, which the next run judges: never a duplicate, never a gap.
    """
    import json

    from tqdm import tqdm

    judge_stores = dict(judge_stores or {})
    generated, judged = 0, {p: 0 for p in judge_stores}
    with tqdm(total=total, desc=desc, unit="item", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            records = batch.to_dict("records")
            columns = [JUDGMENT_COLUMN.format(p) for p in judge_stores]
            if gen_store is not None:
                new = [
                    _stored_row({k: v for k, v in r.items() if k not in columns}) for r in records if r["id"] in fresh
                ]
                gen_store.write(new)
                generated += len(new)
            for protocol, store in judge_stores.items():
                rows = [r for r in records if r.get(JUDGMENT_COLUMN.format(protocol))]
                store.write(json.loads(r[JUDGMENT_COLUMN.format(protocol)]) for r in rows)
                judged[protocol] += sum(1 for r in rows if r["status"] == "generated")
            bar.update(len(records))
    return generated, judged


def _record_unanswered(answers: Mapping[str, Mapping[str, Any]], stores: Mapping[str, PhaseStore]) -> None:
    """Writes, per protocol, the judgment of each stored answer that failed (its status), unless stored."""
    for protocol, store in stores.items():
        stored = store.rows()
        store.write(
            judgment_row(row, protocol, {"status": row["status"], "error": row.get("error", "")})
            for i, row in answers.items()
            if row["status"] != "generated" and stored.get(i, {}).get("status") != row["status"]
        )


def _scored_ids(stores: Mapping[str, PhaseStore]) -> dict[str, set[str]]:
    """Returns {protocol: ids already scored}: the ids each protocol's judge skips."""
    return {p: {i for i, r in s.rows().items() if r.get("status") in SCORED_STATUSES} for p, s in stores.items()}


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

    _record_unanswered(answers, stores)
    scored = _scored_ids(stores)
    todo = [
        dict(row)
        for i, row in answers.items()
        if row["status"] == "generated" and any(i not in scored[p] for p in stores)
    ]
    if not todo:
        return {p: 0 for p in stores}
    ds = _judge_stage(ray.data.from_items(todo), judge, judge_model, cfg, scored, rollout_cfg)
    return _consume(ds, len(todo), "judge", progress, judge_stores=stores)[1]


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
    """Connects to the Ray cluster at `address`, or starts a local one sized for this machine, unless connected."""
    import os

    import ray

    if ray.is_initialized():
        return
    # A small CPU machine is oversubscribed: Ray Data's tasks and the engine actor need whole CPUs
    # (docs/cpu_notes.md), and the engine and the judge server time-share the cores anyway.
    num_cpus = None if address else max(os.cpu_count() or 1, 4)
    local = {} if address else {"include_dashboard": local_dashboard()}
    ray.init(
        address=address,
        num_cpus=num_cpus,
        runtime_env={"env_vars": worker_env()},
        **local,
        log_to_driver=False,  # the candidate and judge engines' output stays in the Ray session logs
    )
    from medix_ray import console

    console.current().quiet_libraries()
    console.current().link_ray_logs()


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
