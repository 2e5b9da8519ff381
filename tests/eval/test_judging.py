"""The evaluation judge: score parsing, vote rules, and both protocols against a scripted chat endpoint."""

import asyncio

import pytest

from medix_ray.eval.judging import (
    REEVALUATE,
    combine,
    final_answer,
    judge_prompt,
    parse_score,
    structured_score,
    work_key,
)
from medix_ray.eval.protocol import judge_item
from medix_ray.rewards.judge import OpenAIJudge


@pytest.mark.parametrize(
    ("reply", "kind", "expected"),
    [
        ('{"score": 1}', "binary", 1.0),
        ('{"score": 0}', "binary", 0.0),
        ('```json\n{"score": 1}\n```', "binary", 1.0),  # fenced JSON
        ('<think>The letter is B, which is {"score": 0}?</think>\n{"score": 1}', "binary", 1.0),  # think block first
        ("Okay, checking it.</think>\n{'score': 0}", "binary", 0.0),  # an unclosed-at-start think, single quotes
        ('Sure! Here is my grade: {"score": 1} Hope this helps.', "binary", 1.0),  # stray text around it
        ('{"score": "1"}', "binary", 1.0),  # the string "1" counts (the reference counted it 0)
        ('{"score": "1.0"}', "binary", 1.0),
        ("1", "binary", 1.0),  # a bare number
        ('"score": 1', "binary", 1.0),  # a field without braces
        ('{"score": 2}', "binary", None),  # out of the binary range
        ('{"score": true}', "binary", None),
        ('{"score": 4}', "rubric", 4.0),
        ('{"score": "3.5"}', "rubric", 3.5),
        ('{"score": 6}', "rubric", None),
        ('{"score": -1}', "rubric", None),
        ("I cannot grade this.", "binary", None),
        ("", "rubric", None),
    ],
)
def test_parse_score(reply, kind, expected):
    assert parse_score(reply, kind) == expected


def test_final_answer_is_the_text_after_the_last_think_close():
    assert final_answer("<think>a</think> B. Aspirin ") == "B. Aspirin"
    assert final_answer("<thinking>x</thinking>one</think>two") == "two"
    assert final_answer("no think at all") == "no think at all"


@pytest.mark.parametrize(
    ("scores", "kind", "expected"),
    [
        ([1.0, 1.0, 0.0], "binary", 1.0),
        ([1.0, 0.0, 0.0], "binary", 0.0),
        ([1.0, 0.0], "binary", 0.0),  # a tie is not a majority
        ([1.0], "binary", 1.0),
        ([5.0, 4.0, 3.0], "rubric", 4.0),
        ([0.0, 0.0, 5.0], "rubric", 5.0 / 3),
    ],
)
def test_combine(scores, kind, expected):
    assert combine(scores, kind) == pytest.approx(expected)


def test_templates_carry_inputs_and_reject_unknown():
    base = judge_prompt("base", "Q?\n\nChoices:\nA. x\nB. y", "y", "B")
    assert (
        "Choices:\nA. x" in base and "Correct answer:\ny" in base and 'Predicted answer (a JSON string):\n"B"' in base
    )
    mimic = judge_prompt("mimic", "Summarise.", "No acute findings.", "Normal chest.")
    assert "0 - completely wrong" in mimic and "5 - near-perfect" in mimic and "Normal chest." in mimic
    with pytest.raises(ValueError, match="unknown judge template"):
        judge_prompt("lenient", "q", "a", "p")


def test_structured_request_restricts_the_score_range():
    assert structured_score("binary")["json"]["properties"]["score"]["enum"] == [0, 1]
    assert structured_score("rubric")["json"]["properties"]["score"]["enum"] == [0, 1, 2, 3, 4, 5]


def test_work_key_only_for_deterministic_judgements():
    assert work_key("paper", 3, 0.7, "m", "p") == work_key("paper", 3, 0.0, "m", "p")
    assert work_key("paper", 3, 0.0, "m", "p") != work_key("paper", 3, 0.0, "m", "q")
    assert work_key("independent", 3, 0.7, "m", "p") is None


ROW = {
    "id": "medqa_0",
    "kind": "binary",
    "template": "base",
    "question": "Which drug?\n\nChoices:\nA. Aspirin\nB. Heparin",
    "answer": "Heparin",
    "prediction": "<think>anticoagulant</think>B",
}


def _judge(url):
    return OpenAIJudge(url, "judge-model", max_retries=1, backoff_s=0.01)


def _run(coro):
    return asyncio.run(coro)


def test_paper_protocol_is_one_conversation_with_reevaluation_and_majority(stub):
    handler, url = stub
    handler.script = ['{"score": 1}', '{"score": 0}', '{"score": 1}']
    out = _run(judge_item(_judge(url), ROW, protocol="paper", rounds=3, max_tokens=512))
    assert out["status"] == "scored" and out["score"] == 1.0 and out["rounds"] == [1.0, 0.0, 1.0]
    first, _, third = handler.requests
    assert len(first["messages"]) == 1 and 'Predicted answer (a JSON string):\n"B"' in first["messages"][0]["content"]
    assert "anticoagulant" not in first["messages"][0]["content"]  # the judge sees the text after </think>
    assert [m["role"] for m in third["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert third["messages"][1]["content"] == '{"score": 1}' and third["messages"][-1]["content"] == REEVALUATE
    assert (first["temperature"], first["max_tokens"]) == (0.0, 512)


def test_paper_protocol_rubric_is_the_mean(stub):
    handler, url = stub
    handler.script = ['{"score": 4}', '{"score": 3}', '{"score": 5}']
    row = dict(ROW, kind="rubric", template="mimic")
    out = _run(judge_item(_judge(url), row, protocol="paper", rounds=3, max_tokens=512))
    assert out["score"] == pytest.approx(4.0)


def test_unparseable_round_is_retried_then_a_judge_error(stub):
    handler, url = stub
    handler.script = ['{"score": 1}', "hmm", '{"score": 0}', "still no", "nope"]
    out = _run(judge_item(_judge(url), ROW, protocol="paper", rounds=3, max_tokens=64))
    assert out["rounds"] == [1.0, 0.0, None]  # round 2 succeeded on its retry, round 3 never did
    assert out["status"] == "judge_error" and "round 3" in out["error"]
    handler.script, handler.default = [], "no score here"
    out = _run(judge_item(_judge(url), ROW, protocol="paper", rounds=3, max_tokens=64))
    assert out["status"] == "judge_error" and out["score"] is None
    assert "round 1" in out["error"] and "unparseable" in out["error"]


def test_independent_votes_are_fresh_conversations(stub):
    handler, url = stub
    handler.script = ['{"score": 0}', '{"score": 1}', '{"score": 1}']
    out = _run(judge_item(_judge(url), ROW, protocol="independent", rounds=3, max_tokens=64, vote_temperature=0.7))
    assert out["score"] == 1.0 and sorted(out["rounds"]) == [0.0, 1.0, 1.0]
    assert all(len(r["messages"]) == 1 and r["temperature"] == 0.7 for r in handler.requests)


def test_independent_at_temperature_zero_asks_once(stub):
    handler, url = stub
    handler.default = '{"score": 1}'
    out = _run(judge_item(_judge(url), ROW, protocol="independent", rounds=3, max_tokens=64))
    assert out["score"] == 1.0 and len(handler.requests) == 1


def test_structured_judging_sends_the_schema(stub):
    handler, url = stub
    handler.default = '{"score": 3}'
    row = dict(ROW, kind="rubric", template="mimic")
    _run(judge_item(_judge(url), row, protocol="paper", rounds=1, max_tokens=16, structured=True))
    (body,) = handler.requests
    assert body["structured_outputs"]["json"]["properties"]["score"]["enum"] == [0, 1, 2, 3, 4, 5]
