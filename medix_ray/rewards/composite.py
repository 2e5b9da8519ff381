"""The composite reward: the one place that combines the components, for both presets.

    R = (1 - w_f) * (w_llm * r_llm + w_emb * r_emb + w_mod * r_mod) + w_f * r_fmt
      = 0.5175 r_llm + 0.3375 r_emb + 0.045 r_mod + 0.10 r_fmt      (the paper's weights)

Each scored item yields a `RewardBreakdown`: the overall reward, each component, and a status
per component saying how it was decided. Presets (docs/method.md §1.4 and §8):

| | `paper` (reference `compute_score`, quirks kept) | `medix` (default) |
|---|---|---|
| text handling | whitespace next to `<`, `>`, `/` deleted everywhere | untouched |
| think tag | `<thinking>` (the prompt asks for it too) | `data.think_tag`, `<think>` by default |
| no `<answer>` | the whole response is the answer | no accuracy (status `no_answer`) |
| invalid answer | empty, 1 char, or has `__` `:` `?` → 0 | only content-free answers; "3:1", "5", "B" count |
| grader-addressing answers | not detected | 0, status `grader_attack` |
| exact match | string equality → 1, no judge | case- and space-insensitive → 1, no judge |
| closed-form references | judged | yes/no, option letters, numbers+units compared without a judge |
| judge sees | predicted and reference answers | also the question |
| judge reply | contains "YES" → 1 | first word YES/NO; otherwise retried |
| judge failure | 0 | status `judge_error`, overall None: excluded from training, never 0 |
| no `>` in solution | `bad_reference`, overall None (reference: IndexError → 0) | modality `bad_reference` |
| embedding guard | none | left/right, upper/lower, benign/malignant contradictions → 0 |
| format | from the first think tag on: think block + answer block | also nothing but one tag before, one answer block |
| modality | text before think tag (none: 0) == solution up to `>`, upper-cased | first known tag before think tag |
| answer cleaning | strip, then periods ("Left lung ." ≠ "Left lung") | strip, periods, strip again |
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medix_ray.data.output_format import OutputFormat
from medix_ray.rewards import rules
from medix_ray.rewards.embedding import Similarity, similarity_score
from medix_ray.rewards.grader_attack import check_answer
from medix_ray.rewards.judge import Judge, judge_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardWeights:
    format: float = 0.1
    llm: float = 0.575
    embed: float = 0.375
    modality: float = 0.05


def composite_reward(
    fmt: float, llm: float, embed: float, modality: float, w: RewardWeights = RewardWeights()
) -> float:
    """Returns the overall reward in [0, 1] from the four components (the formula of the paper)."""
    return (1.0 - w.format) * (w.llm * llm + w.embed * embed + w.modality * modality) + w.format * fmt


@dataclass(frozen=True)
class RewardItem:
    """One response to score: `reference` is the dataset's `solution` (`<TAG> answer`)."""

    id: str
    question: str
    response: str
    reference: str


# The registry of the reward's components: the breakdown's fields, in the order of `composite_reward`'s
# arguments; their metric names are `reward/<component>` (training) and `val/<component>` (validation).
COMPONENTS = ("format", "accuracy_llm", "accuracy_embed", "modality")


def component_metric(component: str, prefix: str = "reward") -> str:
    """Returns the metric name of a component (`reward/format`, `val/accuracy_llm`, ...)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown reward component {component!r}; the components are {COMPONENTS}")
    return f"{prefix}/{component}"


@dataclass
class RewardBreakdown:
    """The reward of one item: overall, each component (COMPONENTS), and how each was decided."""

    id: str
    overall: float | None
    format: float | None
    accuracy_llm: float | None
    accuracy_embed: float | None
    modality: float | None
    status: dict[str, str] = field(default_factory=dict)
    answer: str = ""

    @property
    def scored(self) -> bool:
        """Returns whether the item has a reward the trainer may use (no component failed)."""
        return self.overall is not None

    def to_dict(self) -> dict[str, Any]:
        """Returns the breakdown as a JSON-ready dict: id, overall, the COMPONENTS, status (a copy), answer."""
        return {
            "id": self.id,
            "overall": self.overall,
            **self.components(),
            "status": dict(self.status),
            "answer": self.answer,
        }

    def components(self) -> dict[str, float | None]:
        """Returns {component: value} in registry order."""
        return {c: getattr(self, c) for c in COMPONENTS}


@dataclass(frozen=True)
class RewardSpec:
    """How a preset scores: the behaviour switches, the output format it scores, and the weights."""

    preset: str = "medix"
    format: OutputFormat = OutputFormat()
    weights: RewardWeights = RewardWeights()
    embed_mode: str = "threshold"
    embed_threshold: float = 0.8

    @classmethod
    def paper(cls) -> RewardSpec:
        return cls(preset="paper", format=OutputFormat.paper())

    @classmethod
    def from_config(cls, cfg) -> RewardSpec:
        """Returns the spec of a `MedixConfig`: its reward section and the run's one output format."""
        r = cfg.reward
        return cls(
            preset=r.preset,
            format=OutputFormat.from_config(cfg),
            weights=RewardWeights(r.format_weight, r.llm_weight, r.embed_weight, r.modality_weight),
            embed_mode=r.embedding.mode,
            embed_threshold=r.embedding.threshold,
        )


_OPPOSITES = (
    ("left", "right"),
    ("upper", "lower"),
    ("benign", "malignant"),
    ("anterior", "posterior"),
    ("increased", "decreased"),
    ("hyper", "hypo"),
)


def contradicts(answer: str, reference: str) -> bool:
    """Returns True if the answer names the opposite side/grade of a pair the reference names (left vs right, ...)."""
    a, r = answer.lower(), reference.lower()
    for x, y in _OPPOSITES:
        for mine, other in ((x, y), (y, x)):
            in_ref = re.search(rf"\b{mine}", r) and not re.search(rf"\b{other}", r)
            if in_ref and re.search(rf"\b{other}", a) and not re.search(rf"\b{mine}", a):
                return True
    return False


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".").strip().casefold()


@dataclass
class _Work:
    """An item in flight: the rule components and, if needed, what the judge and embedder must decide."""

    item: RewardItem
    breakdown: RewardBreakdown
    ref_answer: str = ""
    pending: bool = False


# Above this many characters of responses, a batch's rules run off the event loop (CompositeScorer.score).
RULES_IN_THREAD_CHARS = 65_536


class CompositeScorer:
    """Scores batches of items: rules in-process, judge calls concurrently, embeddings in one batch."""

    def __init__(self, spec: RewardSpec, judge: Judge, similarity: Similarity):
        self.spec = spec
        self.judge = judge
        self.similarity = similarity

    # -- rules ------------------------------------------------------------------------------
    def _prepare(self, item: RewardItem) -> _Work:
        s = self.spec
        paper = s.preset == "paper"
        response = rules.squeeze_whitespace(item.response) if paper else item.response
        ref_answer: str | None
        if paper:
            tag_target, ref_answer = rules.paper_split_reference(item.reference)
        else:
            tag_target, ref_answer = rules.split_reference(item.reference)
        status: dict[str, str] = {}
        of = s.format
        if paper:
            fmt = rules.paper_format_reward(response, of.think_tag, of.answer_tag)
            modality = rules.paper_modality_reward(response, tag_target, of.think_tag)
            status["modality"] = "scored"
        else:
            fmt = rules.medix_format_reward(response, of.think_tag, of.answer_tag)
            tag_name = tag_target.strip("<> ").upper()
            if tag_name in {t.upper() for t in of.modalities}:
                modality = rules.medix_modality_reward(response, tag_name, of.think_tag, of.modalities)
                status["modality"] = "scored"
            else:
                modality = None
                status["modality"] = "bad_reference"
        status["format"] = "scored"
        span = of.answer_span(response)
        if paper:
            answer = rules.paper_clean_answer(span if span is not None else response)
        else:
            answer = rules.clean_answer(span if span is not None else "")
        bd = RewardBreakdown(item.id, None, fmt, None, None, modality, status, answer)
        work = _Work(item, bd, ref_answer or "")

        def decide(value: float, why: str) -> _Work:
            bd.accuracy_llm = bd.accuracy_embed = value
            status["accuracy_llm"] = status["accuracy_embed"] = why
            return work

        if paper:
            if ref_answer is None:
                # A solution without `>`: the reference's `ground_truth.split(">", 1)[1]` raises IndexError,
                # which its accuracy functions turn into a silent 0 for both signals (whatever the answer).
                # Here the item is unscored instead, as the project treats bad input: both accuracies None,
                # status `bad_reference`, so `overall` is None, which the trainer leaves out of the update and
                # counts (`reward/unscored`), and `medix-ray score` reports. Format and modality keep the
                # reference's values (its modality target is then the whole solution plus ">").
                status["accuracy_llm"] = status["accuracy_embed"] = "bad_reference"
                return work
            if rules.paper_invalid_answer(answer):
                return decide(0.0, "invalid_answer")
            if answer == ref_answer:
                return decide(1.0, "exact_match")
        else:
            if not ref_answer:
                status["accuracy_llm"] = status["accuracy_embed"] = "bad_reference"
                return work
            if span is None:
                return decide(0.0, "no_answer")
            if check_answer(answer, ref_answer, item.question).is_attack:
                return decide(0.0, "grader_attack")
            if rules.medix_invalid_answer(answer):
                return decide(0.0, "invalid_answer")
            if _normalise(answer) == _normalise(ref_answer):
                return decide(1.0, "exact_match")
            closed = rules.closed_form_match(answer, ref_answer)
            if closed is not None:
                return decide(1.0 if closed else 0.0, "closed_form")
        work.pending = True
        return work

    # -- model calls ------------------------------------------------------------------------
    async def _embed(self, works: list[_Work]) -> None:
        s = self.spec
        try:
            cosines = await self.similarity.acosines([w.breakdown.answer for w in works], [w.ref_answer for w in works])
        except Exception as exc:  # a failing embedder marks its items; it never becomes a silent 0
            logger.warning("embedding failed for %d items: %s", len(works), exc)
            for w in works:
                w.breakdown.accuracy_embed = 0.0 if s.preset == "paper" else None
                w.breakdown.status["accuracy_embed"] = "embed_error"
            return
        for w, cos in zip(works, cosines, strict=True):
            if s.preset != "paper" and contradicts(w.breakdown.answer, w.ref_answer):
                w.breakdown.accuracy_embed = 0.0
                w.breakdown.status["accuracy_embed"] = "contradiction"
            else:
                w.breakdown.accuracy_embed = similarity_score(float(cos), s.embed_mode, s.embed_threshold)
                w.breakdown.status["accuracy_embed"] = "scored"

    async def score(self, items: Sequence[RewardItem]) -> list[RewardBreakdown]:
        """Returns one breakdown per item, in order.

        The rules of a batch with more than RULES_IN_THREAD_CHARS characters of responses run in a worker
        thread, so that a large batch does not hold the event loop (a service's other requests) meanwhile.
        """
        if sum(len(item.response) for item in items) > RULES_IN_THREAD_CHARS:
            works = await asyncio.to_thread(lambda: [self._prepare(item) for item in items])
        else:
            works = [self._prepare(item) for item in items]
        pending = [w for w in works if w.pending]
        if pending:
            prompts = [
                judge_prompt(self.spec.preset, w.breakdown.answer, w.ref_answer, w.item.question) for w in pending
            ]
            verdicts, _ = await asyncio.gather(self.judge.verdicts(prompts), self._embed(pending))
            for w, v in zip(pending, verdicts, strict=True):
                if v.score is None:
                    w.breakdown.accuracy_llm = 0.0 if self.spec.preset == "paper" else None
                    w.breakdown.status["accuracy_llm"] = "judge_error"
                else:
                    w.breakdown.accuracy_llm = v.score
                    w.breakdown.status["accuracy_llm"] = v.status
        for w in works:
            bd = w.breakdown
            parts = tuple(bd.components().values())
            bd.overall = None if any(p is None for p in parts) else composite_reward(*parts, self.spec.weights)
        return [w.breakdown for w in works]

    def score_sync(self, items: Sequence[RewardItem]) -> list[RewardBreakdown]:
        """Returns score(items), run on this process's background event loop (usable from sync code)."""
        return run_sync(self.score(items))


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def run_sync(coro):
    """Runs a coroutine on one long-lived background loop, so async clients keep their connections across calls."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="medix-reward-loop", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()
