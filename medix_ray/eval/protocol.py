"""The judge protocols, run on a batch of items over any chat transport.

    transport = HTTPTransport(OpenAIJudge(url, model))          # or InProcessTransport(llm) (local_judge.py)
    results = asyncio.run(judge_rows(transport, rows, protocol="paper", rounds=3, max_tokens=64))
    result = asyncio.run(judge_item(OpenAIJudge(url, model), row, protocol="paper", rounds=3, max_tokens=64))

One implementation of the rules drives both transports, so an item gets the same conversation, the same
retries and the same verdict whether its judge sits behind HTTP or in this process. A transport only
sends chats (`ChatRequest`, medix_ray/rewards/judge_chat.py) and returns replies (`ChatTransport`); the
protocol here decides what to send:

- `paper` (the reference's): round 1 for every item of the batch at once, then round 2 for all of them
  with the conversation continued by the re-evaluate turn (`judging.REEVALUATE`), and so on. A binary
  item stops as soon as its strict majority over `rounds` is decided (`decided`): with 3 rounds, when the
  first two agree the third cannot change the verdict, so it is not asked (exact early decision; the
  saved rounds are counted per item). A rubric item is the mean of all its rounds, so it takes all.
- `independent`: `rounds` fresh one-turn votes at `vote_temperature` (one at temperature 0), sent at once.

A row whose prediction is a grader attack (`judging.attack_judgment`) is decided 0 without the judge.
Replies are parsed by `judging.parse_score`; an unparseable reply, or a request that failed in a way the
transport calls retryable, is sent again, up to `max_retries` times, together with the others of its
round that failed (the transport may pause between attempts). A round that still has no score ends its
item as a `judge_error` naming the round; errors are redacted (`medix_ray.redact`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from medix_ray.eval.judging import REEVALUATE, attack_judgment, combine, item_prompt, parse_score, structured_score
from medix_ray.redact import redact_text
from medix_ray.rewards.judge_chat import ChatRequest

PROTOCOLS = ("paper", "independent")


class ChatTransport(Protocol):
    """Sends chats to a judge model; one attempt per request, no retry (the protocol retries)."""

    async def send(self, requests: Sequence[ChatRequest]) -> list[str | BaseException]:
        """Returns one reply text per request, in order, or the exception that request failed with."""
        ...

    async def pause(self, attempt: int) -> None:
        """Waits before retry number `attempt` (1, 2, ...) of the requests that failed."""
        ...

    def retryable(self, exc: BaseException) -> bool:
        """Returns whether a request that failed with `exc` may succeed if sent again."""
        ...


class HTTPTransport:
    """Chats over an OpenAI-compatible endpoint through `medix_ray.rewards.judge.OpenAIJudge` (its request
    body, concurrency bound and backoff)."""

    def __init__(self, judge: Any):
        self.judge = judge

    async def send(self, requests: Sequence[ChatRequest]) -> list[str | BaseException]:
        semaphore = asyncio.Semaphore(self.judge.concurrency)

        async def one(request: ChatRequest) -> str:
            async with semaphore:
                return await self.judge.chat(
                    [dict(m) for m in request.messages],
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    structured=dict(request.structured) if request.structured else None,
                )

        return list(await asyncio.gather(*(one(r) for r in requests), return_exceptions=True))

    async def pause(self, attempt: int) -> None:
        await asyncio.sleep(self.judge.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))

    def retryable(self, exc: BaseException) -> bool:
        """Timeouts, dropped connections, 408/409/429 and 5xx (`medix_ray.rewards.judge.retryable`)."""
        from medix_ray.rewards.judge import retryable

        return retryable(exc)


def decided(scores: Sequence[float], kind: str, rounds: int) -> float | None:
    """Returns the item's final score once the remaining rounds cannot change it; None while they can.

    Binary: 1 iff a strict majority of all `rounds` say 1 (`judging.combine`), so the verdict is fixed as
    soon as the 1s already exceed half of `rounds`, or the 1s plus every round still to come cannot.
    Rubric: the mean of all rounds, fixed only when every round is in.
    """
    if len(scores) >= rounds:
        return combine(list(scores), kind)
    if kind != "binary":
        return None
    ones = sum(1 for s in scores if s == 1.0)
    if ones * 2 > rounds:
        return 1.0
    if (ones + rounds - len(scores)) * 2 <= rounds:
        return 0.0
    return None


@dataclass
class _Item:
    """One item's progress through the protocol."""

    kind: str
    messages: list[dict[str, str]]
    planned: int  # rounds (paper) or votes (independent) the protocol plans to ask
    scores: list[float | None] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    score: float | None = None
    error: str = ""

    def result(self, early: bool) -> dict[str, Any]:
        asked = len(self.scores)
        saved = self.planned - asked if early and not self.error else 0
        status = "judge_error" if self.error else "scored"
        return {
            "status": status,
            "score": None if self.error else self.score,
            "rounds": list(self.scores),
            "replies": list(self.replies),
            "rounds_asked": asked,
            "rounds_saved": saved,
            "error": self.error,
        }


async def _ask(
    transport: ChatTransport, requests: list[ChatRequest], kinds: list[str], max_retries: int
) -> list[tuple[float | None, str, str]]:
    """Returns (score, last reply, last error) per request; failed ones are resent up to max_retries times."""
    out: list[tuple[float | None, str, str]] = [(None, "", "no attempt")] * len(requests)
    todo = list(range(len(requests)))
    for attempt in range(max_retries + 1):
        if attempt:
            await transport.pause(attempt)
        replies = await transport.send([requests[i] for i in todo])
        failed = []
        for i, reply in zip(todo, replies, strict=True):
            if isinstance(reply, BaseException):
                error = redact_text(f"{type(reply).__name__}: {reply}")[:300]
                if transport.retryable(reply):
                    failed.append(i)
                else:
                    error = f"not retried: {error}"
                out[i] = (None, out[i][1], error)
                continue
            score = parse_score(reply, kinds[i])
            out[i] = (score, reply, "" if score is not None else f"unparseable judge reply {reply[:80]!r}")
            if score is None:
                failed.append(i)
        todo = failed
        if not todo:
            break
    return out


async def judge_rows(
    transport: ChatTransport,
    rows: Sequence[Mapping[str, Any]],
    *,
    protocol: str,
    rounds: int,
    max_tokens: int,
    max_retries: int = 2,
    vote_temperature: float = 0.0,
    structured: bool = False,
    early_decision: bool = True,
) -> list[dict[str, Any]]:
    """Returns the judgment fields of each generated row, in order: status, score, rounds, replies,
    rounds_asked, rounds_saved, error (see the module docstring for the rules)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown judge protocol {protocol!r}; expected paper or independent")
    if rounds < 1:
        raise ValueError(f"judge rounds must be at least 1, got {rounds}")
    # Predictions that attack the judge are decided without it (judging.attack_judgment); the rest are judged.
    attacks = [attack_judgment(row) for row in rows]
    if any(a is not None for a in attacks):
        rest = iter(
            await judge_rows(
                transport,
                [row for row, a in zip(rows, attacks, strict=True) if a is None],
                protocol=protocol,
                rounds=rounds,
                max_tokens=max_tokens,
                max_retries=max_retries,
                vote_temperature=vote_temperature,
                structured=structured,
                early_decision=early_decision,
            )
        )
        return [a if a is not None else next(rest) for a in attacks]
    items = [
        _Item(
            kind=row["kind"],
            messages=[{"role": "user", "content": item_prompt(row)}],
            planned=rounds if protocol == "paper" or vote_temperature > 0 else 1,
        )
        for row in rows
    ]

    def request(item: _Item, temperature: float) -> ChatRequest:
        return ChatRequest(
            messages=tuple(item.messages),
            temperature=temperature,
            max_tokens=max_tokens,
            structured=structured_score(item.kind) if structured else None,
        )

    if protocol == "independent":
        votes = [(item, v) for item in items for v in range(item.planned)]
        answers = await _ask(
            transport, [request(it, vote_temperature) for it, _ in votes], [it.kind for it, _ in votes], max_retries
        )
        for (item, v), (score, reply, err) in zip(votes, answers, strict=True):
            item.scores.append(score)
            item.replies.append(reply)
            if score is None and not item.error:
                item.error = f"vote {v + 1}: {err}"
        for item in items:
            if not item.error:
                item.score = combine([s for s in item.scores if s is not None], item.kind)
        return [item.result(early=False) for item in items]

    active = list(items)
    for round_ in range(rounds):
        if not active:
            break
        answers = await _ask(transport, [request(it, 0.0) for it in active], [it.kind for it in active], max_retries)
        still = []
        for item, (score, reply, err) in zip(active, answers, strict=True):
            item.scores.append(score)
            item.replies.append(reply)
            if score is None:
                item.error = f"round {round_ + 1}: {err}"
                continue
            scores = [s for s in item.scores if s is not None]
            final = decided(scores, item.kind, rounds) if early_decision else None
            if final is None and len(scores) == rounds:
                final = combine(scores, item.kind)
            if final is not None:
                item.score = final
                continue
            item.messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": REEVALUATE}]
            still.append(item)
        active = still
    return [item.result(early=early_decision) for item in items]


async def judge_item(
    judge: Any,
    row: Mapping[str, Any],
    *,
    protocol: str,
    rounds: int,
    max_tokens: int,
    vote_temperature: float = 0.0,
    structured: bool = False,
    early_decision: bool = True,
) -> dict[str, Any]:
    """Returns the judgment fields of one generated row: status, score, rounds, replies, rounds_asked,
    rounds_saved, error.

    `judge` is a `medix_ray.rewards.judge.OpenAIJudge` (its `max_retries` bounds the retries); the rules
    are `judge_rows`, run over HTTP for this one row.
    """
    (result,) = await judge_rows(
        HTTPTransport(judge),
        [row],
        protocol=protocol,
        rounds=rounds,
        max_tokens=max_tokens,
        max_retries=judge.max_retries,
        vote_temperature=vote_temperature,
        structured=structured,
        early_decision=early_decision,
    )
    return result
