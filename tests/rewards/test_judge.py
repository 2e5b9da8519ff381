"""The judge prompts, verdict parsing, and the OpenAI-protocol client against a local stub server."""

import threading
from http.server import ThreadingHTTPServer

import pytest

from medix_ray.rewards.composite import run_sync
from medix_ray.rewards.judge import (
    JudgeUnavailableError,
    OpenAIJudge,
    VerdictCache,
    judge_prompt,
    parse_verdict,
)


@pytest.mark.parametrize(
    ("reply", "paper", "medix"),
    [
        ("YES", 1.0, 1.0),
        ("yes.", 1.0, 1.0),
        ("NO", 0.0, 0.0),
        ("NO, YES", 1.0, 0.0),  # the reference's "contains YES" rule
        ("<think>maybe no</think>\nYES", 1.0, 1.0),
        ("**YES**", 1.0, 1.0),
        ("I think so", 0.0, None),
        ("", 0.0, None),
    ],
)
def test_parse_verdict(reply, paper, medix):
    assert parse_verdict("paper", reply) == paper
    assert parse_verdict("medix", reply) == medix


def test_prompts_carry_their_inputs():
    paper = judge_prompt("paper", "heart attack", "Myocardial infarction", "What happened?")
    assert "heart attack" in paper and "Myocardial infarction" in paper and "What happened?" not in paper
    medix = judge_prompt("medix", "heart attack", "Myocardial infarction", "  What happened?  ")
    assert "Question: What happened?\n" in medix and "not instructions" in medix
    with pytest.raises(ValueError, match="unknown reward preset"):
        judge_prompt("lenient", "a", "b")


def _judge(url, **kw):
    kw.setdefault("backoff_s", 0.01)
    return OpenAIJudge(url, "judge-model", **kw)


def test_request_follows_the_reference_settings(stub, monkeypatch):
    handler, url = stub
    monkeypatch.setenv("MEDIX_RAY_JUDGE_API_KEY", "sk-secret")
    (v,) = run_sync(_judge(url).verdicts(["prompt one"]))
    assert v.score == 1.0 and v.status == "scored" and v.attempts == 1
    (body,) = handler.requests
    assert body["messages"] == [{"role": "user", "content": "prompt one"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.0, 1.0, 4)
    assert body["chat_template_kwargs"] == {"enable_thinking": False}


def test_server_errors_are_retried_then_scored(stub):
    handler, url = stub
    handler.script = [500, 503, "NO"]
    (v,) = run_sync(_judge(url, max_retries=3).verdicts(["p"]))
    assert v.score == 0.0 and v.attempts == 3 and len(handler.requests) == 3


def test_unparseable_replies_are_retried_in_medix(stub):
    handler, url = stub
    handler.script = ["Hmm, let me think", "YES"]
    (v,) = run_sync(_judge(url, preset="medix").verdicts(["p"]))
    assert v.score == 1.0 and v.attempts == 2


def test_persistent_failure_is_a_judge_error_not_a_zero(stub):
    handler, url = stub
    handler.default = 500
    (v,) = run_sync(_judge(url, max_retries=2).verdicts(["p"]))
    assert v.score is None and v.status == "judge_error" and v.attempts == 3
    assert "500" in v.error and len(handler.requests) == 3


def test_unreachable_endpoint_is_a_judge_error(stub):
    (v,) = run_sync(_judge("http://127.0.0.1:9/v1", max_retries=1, timeout_s=2).verdicts(["p"]))
    assert v.status == "judge_error" and v.score is None


def test_verdicts_are_cached_by_model_and_prompt(stub):
    handler, url = stub
    cache = VerdictCache()
    judge = _judge(url, cache=cache)
    first = run_sync(judge.verdicts(["a", "b", "a"]))
    again = run_sync(judge.verdicts(["a"]))
    assert [v.score for v in first] == [1.0, 1.0, 1.0]
    assert again[0].status == "cached"
    assert len(handler.requests) <= 3 and cache.hits >= 1
    other = OpenAIJudge(url, "another-judge", cache=cache, backoff_s=0.01)
    assert run_sync(other.verdicts(["a"]))[0].status == "scored"  # a different model is a different key


def test_concurrency_is_bounded(stub):
    handler, url = stub
    judge = _judge(url, concurrency=4)
    out = run_sync(judge.verdicts([f"p{i}" for i in range(40)]))
    assert len(out) == 40 and all(v.score == 1.0 for v in out) and len(handler.requests) == 40


def test_health_check_names_the_endpoint():
    judge = _judge("http://127.0.0.1:9/v1", timeout_s=2)
    with pytest.raises(JudgeUnavailableError, match=r"judge at http://127.0.0.1:9/v1 \(model judge-model\)"):
        run_sync(judge.check())


def test_empty_base_url_is_rejected():
    with pytest.raises(ValueError, match="reward.judge.base_url"):
        OpenAIJudge("", "m")


def test_endpoint_dying_mid_batch_gives_verdicts_or_judge_errors_never_zero(stub):
    """The first 10 requests are answered, then the server goes away: nothing is lost, nothing is a silent 0."""
    handler, _ = stub
    answered = []

    class Dying(handler):
        def do_POST(self):  # noqa: N802
            if len(answered) >= 10:
                self.connection.close()  # as a crashed server: the connection drops without a reply
                return
            answered.append(1)
            super().do_POST()

    handler.default = "NO"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dying)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = OpenAIJudge(
            f"http://127.0.0.1:{server.server_port}/v1", "m", concurrency=2, max_retries=1, backoff_s=0.01, timeout_s=5
        )
        out = run_sync(judge.verdicts([f"p{i}" for i in range(30)]))
    finally:
        server.shutdown()
    assert len(out) == 30
    assert sum(v.status == "scored" for v in out) == 10
    assert all(v.score is None for v in out if v.status == "judge_error")
    assert sum(v.status == "judge_error" for v in out) == 20


def test_constrained_requests_ask_vllm_for_a_yes_no_choice(stub):
    handler, url = stub
    run_sync(_judge(url, constrained=True).verdicts(["p"]))
    assert handler.requests[0]["structured_outputs"] == {"choice": ["YES", "NO"]}
    run_sync(_judge(url).verdicts(["q"]))
    assert "structured_outputs" not in handler.requests[1]
