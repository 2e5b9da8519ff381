"""The batched judge protocol over a scripted transport: lockstep rounds, exact early decision, retries."""

import asyncio
import itertools

import pytest

from medix_ray.eval.judging import REEVALUATE, combine
from medix_ray.eval.protocol import decided, judge_rows
from medix_ray.rewards.judge_chat import ChatRequest

ROW = {
    "id": "medqa_0",
    "kind": "binary",
    "template": "base",
    "question": "Which drug?\n\nChoices:\nA. Aspirin\nB. Heparin",
    "answer": "Heparin",
    "prediction": "B",
}


class Scripted:
    """A transport whose replies a function of (prediction, number of turns so far) decides; records sends."""

    def __init__(self, reply, retryable=True):
        self.reply = reply
        self.sends: list[list[ChatRequest]] = []
        self.pauses = 0
        self._retryable = retryable

    async def send(self, requests):
        self.sends.append(list(requests))
        return [self.reply(r) for r in requests]

    async def pause(self, attempt):
        self.pauses += 1

    def retryable(self, exc):
        return self._retryable


def _flips(request: ChatRequest) -> bool:
    """Returns whether the request is about an item whose question is marked FLIP."""
    return "FLIP" in request.messages[0]["content"]


def _run(transport, rows, **kw):
    kw.setdefault("protocol", "paper")
    kw.setdefault("rounds", 3)
    kw.setdefault("max_tokens", 16)
    return asyncio.run(judge_rows(transport, rows, **kw))


@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 5])
def test_early_decision_gives_the_full_majority_for_every_vote_sequence(rounds):
    for votes in itertools.product([0.0, 1.0], repeat=rounds):
        stops = (decided(votes[:k], "binary", rounds) for k in range(rounds + 1))
        final = next(v for v in stops if v is not None)
        assert final == combine(list(votes), "binary"), votes


def test_decided_stops_two_of_three_only_when_they_agree():
    assert decided([1.0, 1.0], "binary", 3) == 1.0 and decided([0.0, 0.0], "binary", 3) == 0.0
    assert decided([1.0, 0.0], "binary", 3) is None and decided([1.0], "binary", 3) is None
    assert decided([5.0, 5.0], "rubric", 3) is None and decided([5.0, 4.0, 3.0], "rubric", 3) == pytest.approx(4.0)


def test_rounds_go_in_lockstep_and_only_undecided_items_get_round_three():
    # A steady item agrees with itself; a FLIP item changes its vote, so its majority needs the third round.
    def reply(r):
        if not _flips(r):
            return '{"score": 1}'
        return '{"score": 1}' if len(r.messages) == 1 else '{"score": 0}'

    transport = Scripted(reply)
    rows = [ROW, dict(ROW, id="medqa_1", question="FLIP?"), dict(ROW, id="mimic_0", kind="rubric", template="mimic")]
    out = _run(transport, rows)
    assert [len(s) for s in transport.sends] == [3, 3, 2]  # one send per round; round 3 for "A" and the rubric
    assert [r["rounds_asked"] for r in out] == [2, 3, 3] and [r["rounds_saved"] for r in out] == [1, 0, 0]
    assert [r["score"] for r in out] == [1.0, 0.0, pytest.approx(1.0)]
    third = transport.sends[2][0].messages
    assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]
    assert third[-1]["content"] == REEVALUATE and third[1]["content"] == '{"score": 1}'


def test_unparseable_replies_are_retried_in_the_batch_then_a_judge_error():
    attempts = {"n": 0}

    def reply(r):
        if _flips(r):
            return "no score"
        attempts["n"] += 1
        return "hmm" if attempts["n"] == 1 else '{"score": 0}'

    transport = Scripted(reply)
    out = _run(transport, [ROW, dict(ROW, id="medqa_1", question="FLIP?")], max_retries=2)
    assert out[0]["status"] == "scored" and out[0]["score"] == 0.0  # its first reply was retried
    assert out[1]["status"] == "judge_error" and "round 1" in out[1]["error"] and "unparseable" in out[1]["error"]
    assert [len(s) for s in transport.sends] == [2, 2, 1, 1] and transport.pauses == 2


def test_a_request_error_the_transport_will_not_retry_ends_the_item_at_once():
    transport = Scripted(lambda r: ValueError("prompt longer than the context"), retryable=False)
    (out,) = _run(transport, [ROW], max_retries=2)
    assert out["status"] == "judge_error" and "not retried" in out["error"] and len(transport.sends) == 1


def test_independent_votes_at_temperature():
    transport = Scripted(lambda r: '{"score": 1}')
    (out,) = _run(transport, [ROW], protocol="independent", vote_temperature=0.7)
    assert out["score"] == 1.0 and out["rounds_asked"] == 3 and out["rounds_saved"] == 0
    (only,) = transport.sends
    assert all(len(r.messages) == 1 and r.temperature == 0.7 for r in only)
    with pytest.raises(ValueError, match="unknown judge protocol"):
        _run(transport, [ROW], protocol="lenient")
