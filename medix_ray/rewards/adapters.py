"""The composite reward for other trainers: a TRL reward function and verl / EasyR1 `compute_score`.

    from medix_ray.rewards.adapters import MedixReward
    trainer = GRPOTrainer(..., reward_funcs=[MedixReward("configs/tiny_cpu.yaml")])

    # verl: custom_reward_function.path=medix_ray/rewards/adapters.py, name=verl_compute_score
    # EasyR1: worker.reward.reward_function=medix_ray/rewards/adapters.py:easyr1_compute_score

Each scores in-process with the config's judge and embedder (a local vLLM judge is started when
`reward.judge.base_url` is empty), or, given a URL, through the reward service's HTTP API
(`MedixReward(url=...)`; for verl/EasyR1 set $MEDIX_RAY_REWARD_URL). Items whose judge failed
after its retries are unscored:
TRL gets `None` for them (it ignores None rewards); verl and EasyR1 have no such value, so the
adapters raise `UnscoredRewardError` unless `MEDIX_RAY_ON_UNSCORED=zero` asks for the reference's
behaviour (score 0).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from medix_ray.config import load_config
from medix_ray.environment import switches
from medix_ray.rewards.composite import CompositeScorer, RewardBreakdown, RewardItem


class UnscoredRewardError(RuntimeError):
    """An item could not be scored (its judge failed after retries) and the caller cannot take None."""


class MedixReward:
    """A callable scorer, built on first use and kept for the life of the process."""

    __name__ = "medix_reward"  # TRL logs rewards under the function's name

    def __init__(
        self,
        config: str | None = None,
        overrides: Sequence[str] = (),
        *,
        url: str | None = None,
        question_key: str = "problem",
        reference_key: str = "solution",
    ):
        self.config = config
        self.url = url
        self._client = None
        self.overrides = list(overrides)
        self.question_key = question_key
        self.reference_key = reference_key
        self._scorer: CompositeScorer | None = None
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()

    def scorer(self) -> CompositeScorer:
        with self._lock:
            if self._scorer is None:
                from medix_ray.rewards.local import open_scorer

                self._scorer = self._stack.enter_context(open_scorer(load_config(self.config, self.overrides)))
                atexit.register(self._stack.close)
            return self._scorer

    def score(self, items: Sequence[RewardItem]) -> list[RewardBreakdown]:
        if self.url:
            if self._client is None:
                from medix_ray.rewards.http_client import RewardServiceClient

                self._client = RewardServiceClient(self.url)
            return self._client.score(items)
        return self.scorer().score_sync(items)

    def __call__(self, prompts: Sequence[Any] = (), completions: Sequence[Any] = (), **columns: Any) -> list:
        """TRL's reward-function protocol: returns one reward (or None, if unscored) per completion."""
        questions = columns.get(self.question_key) or [""] * len(completions)
        references = columns.get(self.reference_key)
        if references is None:
            raise KeyError(f"the dataset has no '{self.reference_key}' column; pass reference_key= to MedixReward")
        items = [
            RewardItem(str(i), q, _completion_text(c), r)
            for i, (q, c, r) in enumerate(zip(questions, completions, references, strict=True))
        ]
        return [bd.overall for bd in self.score(items)]


def _completion_text(completion: Any) -> str:
    """Returns the text of a TRL completion: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


_default: MedixReward | None = None


def _default_reward() -> MedixReward:
    """The process-wide scorer for verl/EasyR1: $MEDIX_RAY_REWARD_URL (the service) or $MEDIX_RAY_REWARD_CONFIG."""
    global _default
    if _default is None:
        _default = MedixReward(switches.REWARD_CONFIG.read(), url=switches.REWARD_URL.read())
    return _default


def _as_scores(bd: RewardBreakdown) -> dict[str, float]:
    if not bd.scored:
        if switches.ON_UNSCORED.read() != "zero":
            raise UnscoredRewardError(
                f"item {bd.id} is unscored ({bd.status}); set {switches.ON_UNSCORED.name}=zero "
                "to score such items 0 as the reference does"
            )
        return {"overall": 0.0, **{c: v or 0.0 for c, v in bd.components().items()}}
    return {"overall": bd.overall, **bd.components()}


def verl_compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> dict:
    """verl's custom reward function: returns {"score": overall, and each component}."""
    question = (extra_info or {}).get("question", "")
    (bd,) = _default_reward().score([RewardItem("0", question, solution_str, ground_truth)])
    scores = _as_scores(bd)
    return {"score": scores.pop("overall"), **scores}


def easyr1_compute_score(reward_inputs: list[dict[str, Any]], **_: Any) -> list[dict[str, float]]:
    """EasyR1's batch reward function: one dict of `overall` and the components per input."""
    items = [
        RewardItem(str(i), r.get("question", ""), r["response"], r["ground_truth"]) for i, r in enumerate(reward_inputs)
    ]
    return [_as_scores(bd) for bd in _default_reward().score(items)]
