"""In-process scoring: a CompositeScorer built from the config, with a local judge server when no URL is given.

with open_scorer(cfg) as scorer:
    breakdowns = scorer.score_sync(items)
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medix_ray.config import MedixConfig
from medix_ray.rewards.composite import CompositeScorer, RewardItem, RewardSpec
from medix_ray.rewards.embedding import EmbeddingSimilarity, SentenceTransformerEmbedder
from medix_ray.rewards.judge import OpenAIJudge

logger = logging.getLogger(__name__)

ITEM_FIELDS = ("id", "question", "response", "reference")


class RewardInputError(ValueError):
    """A scoring input line is malformed; the message names the line and the field."""


@contextlib.contextmanager
def open_scorer(cfg: MedixConfig) -> Iterator[CompositeScorer]:
    """Yields a scorer for the config; starts (and stops) a local vLLM judge if `reward.judge.base_url` is empty."""
    from medix_ray.rewards.judge_server import LocalJudgeServer

    spec = RewardSpec.from_config(cfg)
    similarity = EmbeddingSimilarity(
        SentenceTransformerEmbedder(cfg.reward.embedding.model, batch_size=cfg.reward.embedding.batch_size)
    )
    with contextlib.ExitStack() as stack:
        base_url = cfg.reward.judge.base_url
        if not base_url:
            base_url = stack.enter_context(
                LocalJudgeServer(cfg.reward.judge.model, kv_cache_space_gib=cfg.rollout.kv_cache_space_gib)
            )
        judge = OpenAIJudge.from_config(cfg.reward.judge, spec.preset, base_url=base_url)
        yield CompositeScorer(spec, judge, similarity)


def parse_item(raw: Any, where: str) -> RewardItem:
    """Returns the RewardItem of one input record; raises RewardInputError naming `where` and the field."""
    if not isinstance(raw, dict):
        raise RewardInputError(f"{where}: expected a JSON object; got {type(raw).__name__}")
    for key in ITEM_FIELDS:
        if key not in raw:
            raise RewardInputError(f"{where}: missing field '{key}' (need {', '.join(ITEM_FIELDS)})")
        if not isinstance(raw[key], str) and not (key == "id" and isinstance(raw[key], int)):
            raise RewardInputError(f"{where}: field '{key}' must be a string; got {type(raw[key]).__name__}")
    return RewardItem(str(raw["id"]), raw["question"], raw["response"], raw["reference"])


def read_items(path: Path) -> tuple[list[dict], list[RewardItem]]:
    """Returns the raw records and their RewardItems of a JSONL file, validating every line."""
    records, items = [], []
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise RewardInputError(f"{path}:{n}: not UTF-8 text: {exc}") from exc
            except json.JSONDecodeError as exc:
                raise RewardInputError(f"{path}:{n}: not valid JSON: {exc}") from exc
            items.append(parse_item(raw, f"{path}:{n}"))
            records.append(raw)
    return records, items
