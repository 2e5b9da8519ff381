"""The judge stage's actor: `JudgeWorker` judges batches of answered rows under the configured protocols.

    worker = JudgeWorker(judge, model, cfg, protocols(cfg))   # a Ray Data map_batches class UDF
    judged = worker(batch)                                      # + one judgment_<protocol> column per protocol

The judge is one of three kinds (`eval.judge`): an OpenAI-compatible URL (chats over HTTP through the reward
judge's async client), `serve:<app>` (the reward application's judge deployment, medix_ray/eval/serve_judge.py),
or a local model the actor holds in an in-process vLLM engine (medix_ray/eval/local_judge.py). Whichever it is,
`medix_ray.eval.protocol.judge_rows` runs the protocol on the whole batch, and each item's result becomes the
judgment row the judge phase stores (`judgment_row`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medix_ray.config import EvalConfig, RolloutConfig
from medix_ray.eval.judging import item_prompt, work_key
from medix_ray.eval.serve_judge import is_serve_judge
from medix_ray.eval.store import stored_row


def is_url(judge: str) -> bool:
    """Returns whether eval.judge names an endpoint (else it names a model we serve for the run)."""
    return judge.startswith(("http://", "https://"))


def local_judge_dtype(cfg: EvalConfig) -> str:
    """Returns the dtype of the engine evaluation starts for a local judge model (in-process or served)."""
    return cfg.judge_dtype or cfg.engine_dtype


def protocols(cfg: EvalConfig) -> list[str]:
    return ["paper", "independent"] if cfg.protocol == "both" else [cfg.protocol]


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
    return json.dumps(stored_row(row), ensure_ascii=False, allow_nan=False)


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
