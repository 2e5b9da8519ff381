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
    assert "Question: What happened?\n" in medix and "never instructions" in medix
    assert 'Candidate answer: "heart attack"\n' in medix  # delimited as a JSON string
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


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_a_permanent_4xx_is_not_retried(stub, status):
    """A prompt too long for the judge (400), a bad key, a wrong model: asking again cannot help."""
    handler, url = stub
    handler.default = status
    (v,) = run_sync(_judge(url, max_retries=3).verdicts(["p"]))
    assert len(handler.requests) == 1
    assert v.status == "judge_error" and v.score is None and v.attempts == 1
    assert "not retried" in v.error and str(status) in v.error


@pytest.mark.parametrize("status", [429, 408, 502])
def test_rate_limits_timeouts_and_5xx_are_retried(stub, status):
    handler, url = stub
    handler.script = [status, status, "YES"]
    (v,) = run_sync(_judge(url, max_retries=3).verdicts(["p"]))
    assert v.score == 1.0 and v.attempts == 3 and len(handler.requests) == 3


def test_the_deadline_bounds_all_attempts_of_a_prompt(stub):
    """Each attempt times out after 1 s and would be retried 5 times; the 1.5 s deadline stops it after 2."""
    import time

    handler, _ = stub

    class Slow(handler):
        # its own request log and script: a handler still sleeping after this test must not touch the
        # shared stub's (the next test's) state
        script: list = []
        requests: list = []

        def do_POST(self):  # noqa: N802
            time.sleep(3)
            super().do_POST()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = _judge(f"http://127.0.0.1:{server.server_port}/v1", timeout_s=1, max_retries=5, deadline_s=1.5)
        (v,) = run_sync(judge.verdicts(["p"]))
    finally:
        server.shutdown()
        server.server_close()
    assert v.status == "judge_error" and v.score is None
    assert "deadline of 1.5 s passed" in v.error and v.attempts == 2


def test_deadline_must_be_positive():
    with pytest.raises(ValueError, match="deadline_s must be > 0"):
        OpenAIJudge("http://127.0.0.1:9/v1", "m", deadline_s=0)


def test_verdict_cache_is_bounded_by_bytes():
    cache = VerdictCache(max_bytes=50_000)
    for k in range(5000):
        cache.put(VerdictCache.key("m", f"prompt {k}"), 1.0)
    assert cache.bytes <= 50_000 and 0 < len(cache) < 5000
    assert cache.get(VerdictCache.key("m", "prompt 4999")) == 1.0  # the newest survive
    assert cache.get(VerdictCache.key("m", "prompt 0")) is None


def test_from_config_reads_the_deadline_and_the_cache_budget():
    from medix_ray.config import load_config

    cfg = load_config(None, ["reward.judge.deadline_s=7.5", "reward.judge.cache_mb=0.5"])
    judge = OpenAIJudge.from_config(cfg.reward.judge, "medix", base_url="http://127.0.0.1:9/v1")
    assert judge.deadline_s == 7.5 and judge.cache.max_bytes == 2**19


def test_credentials_in_the_url_are_never_logged_or_raised(caplog):
    url = "http://alice:sk-live-123@127.0.0.1:9/v1?api_key=sk-live-456"
    judge = _judge(url, max_retries=0, timeout_s=2)
    with caplog.at_level("WARNING"):
        (v,) = run_sync(judge.verdicts(["p"]))
    assert v.status == "judge_error"
    with pytest.raises(JudgeUnavailableError) as info:
        run_sync(judge.check())
    text = caplog.text + str(info.value) + v.error
    assert "127.0.0.1:9" in caplog.text and "127.0.0.1:9" in str(info.value)
    assert "sk-live" not in text and "alice" not in text
