"""The Ray Data plumbing of the generate and judge phases: their stages, and the stream drained into the stores.

    ds = generator_stage(ray.data.from_items(rows), CandidateGenerator, model_path, cfg, rollout_cfg, bounds)
    ds = judge_stage(ds, judge, judge_model, cfg, skip)           # optional: generate and judge in one stream
    generated, judged = consume(ds, len(rows), "generate+judge", progress, gen_store=..., judge_stores=...)

Each stage is one actor (`map_batches` with `concurrency=1`) holding its engine or judge client; `consume`
stores each batch the stream yields, answers before judgments, one atomic part file each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from medix_ray.config import EvalConfig, RolloutConfig
from medix_ray.eval.judge_worker import JUDGMENT_COLUMN, JudgeWorker, is_url, protocols
from medix_ray.eval.serve_judge import is_serve_judge
from medix_ray.eval.store import PhaseStore, stored_row


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


def generator_stage(
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


def judge_stage(
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


def consume(
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
    from tqdm import tqdm

    judge_stores = dict(judge_stores or {})
    generated, judged = 0, {p: 0 for p in judge_stores}
    with tqdm(total=total, desc=desc, unit="item", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            records = batch.to_dict("records")
            columns = [JUDGMENT_COLUMN.format(p) for p in judge_stores]
            if gen_store is not None:
                new = [
                    stored_row({k: v for k, v in r.items() if k not in columns}) for r in records if r["id"] in fresh
                ]
                gen_store.write(new)
                generated += len(new)
            for protocol, store in judge_stores.items():
                rows = [r for r in records if r.get(JUDGMENT_COLUMN.format(protocol))]
                store.write(json.loads(r[JUDGMENT_COLUMN.format(protocol)]) for r in rows)
                judged[protocol] += sum(1 for r in rows if r["status"] == "generated")
            bar.update(len(records))
    return generated, judged
