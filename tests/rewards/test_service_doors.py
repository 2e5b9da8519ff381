"""The reward service's doors without Serve: the auth policy, the token check, the body limit, the 422 body.

The same doors on the real Serve app are tested in tests/deployments/test_reward_app.py."""

import asyncio
import json
import logging

import pytest

from medix_ray.rewards.service_doors import (
    BodyLimit,
    UnsafeServiceError,
    brief_input,
    check_auth_policy,
    is_loopback,
    token_matches,
    validation_error_body,
)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "reward.example.org", ""])
def test_non_loopback_hosts(host):
    assert not is_loopback(host)


def _check(host, token="", allow=False):
    check_auth_policy(host, token=token, allow_unauthenticated=allow, token_env="MY_TOKEN")


def test_a_non_loopback_start_without_a_token_is_refused():
    with pytest.raises(UnsafeServiceError, match="on 0.0.0.0 without a bearer token: set MY_TOKEN"):
        _check("0.0.0.0")
    with pytest.raises(UnsafeServiceError, match="10.1.2.3"):  # any of the bound hosts
        _check(["127.0.0.1", "10.1.2.3"])


def test_override_and_loopback_start_but_warn(caplog):
    with caplog.at_level(logging.WARNING):
        _check("0.0.0.0", allow=True)
        _check("127.0.0.1")
    warnings = [r.getMessage() for r in caplog.records]
    assert "UNAUTHENTICATED requests from the network" in warnings[0]
    assert "no bearer token" in warnings[1] and "MY_TOKEN" in warnings[1]


def test_a_token_starts_quietly_anywhere(caplog):
    with caplog.at_level(logging.WARNING):
        _check("0.0.0.0", token="s3cret")
    assert not caplog.records


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret", True),
        ("Bearer s3cre", False),
        ("Bearer s3cretX", False),
        ("bearer s3cret", False),
        ("s3cret", False),
        ("", False),
        (None, False),
        ("Bearer s3cr\udcffet", False),  # undecodable bytes are compared, not an error
    ],
)
def test_token_matches(header, ok):
    assert token_matches(header, "s3cret") is ok


class _Recorder:
    """An inner ASGI app that reads the whole body, as a JSON parser would, and records that it did."""

    def __init__(self):
        self.bodies = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(app, headers, chunks):
    """Runs one HTTP request through an ASGI app; returns (status, body, chunks the app pulled)."""
    pulled, sent = [], []
    queue = list(chunks)

    async def receive():
        chunk = queue.pop(0)
        pulled.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/rewards", "headers": headers}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, pulled


def test_a_declared_oversized_body_gets_413_without_being_read():
    inner = _Recorder()
    app = BodyLimit(inner, max_bytes=lambda: 1000)
    status, body, pulled = _call(app, [(b"content-length", b"5000")], [b"x" * 5000])
    assert status == 413 and "5000 bytes is over the limit of 1000" in json.loads(body)["detail"]
    assert pulled == [] and inner.bodies == []


def test_a_streamed_oversized_body_is_cut_off_at_the_limit():
    inner = _Recorder()
    app = BodyLimit(inner, max_bytes=lambda: 1000)
    status, body, pulled = _call(app, [], [b"x" * 600] * 10)  # chunked: no Content-Length
    assert status == 413 and inner.bodies == []
    assert len(pulled) == 2  # reading stopped at the chunk that passed the limit


def test_bodies_within_the_limit_pass_untouched():
    inner = _Recorder()
    app = BodyLimit(inner, max_bytes=lambda: 1000)
    assert _call(app, [(b"content-length", b"1000")], [b"y" * 1000])[0] == 200
    assert _call(app, [], [b"z" * 500, b"z" * 500])[0] == 200
    assert inner.bodies == [b"y" * 1000, b"z" * 1000]


def test_a_malformed_content_length_is_a_400():
    status, body, _ = _call(BodyLimit(_Recorder(), max_bytes=lambda: 1000), [(b"content-length", b"12x")], [b""])
    assert status == 400 and b"Content-Length" in body


def test_the_422_body_names_the_field_and_never_echoes_a_large_input():
    items = [{"id": str(i), "response": "r" * 100, "reference": "x"} for i in range(5000)]
    errors = [
        {"loc": ("body", "items"), "msg": "List should have at most 4096 items", "type": "too_long", "input": items},
        *[
            {
                "loc": ("body", "items", i, "response"),
                "msg": "too long",
                "type": "string_too_long",
                "input": "r" * 40_000,
            }
            for i in range(50)
        ],
    ]
    body = validation_error_body(errors)
    text = json.dumps(body)
    assert len(text) < 8_000
    assert body["errors"] == 51 and len(body["detail"]) == 10
    assert body["detail"][0] == {
        "loc": "body.items",
        "msg": "List should have at most 4096 items",
        "type": "too_long",
        "input": "[list of 5000 items]",
    }
    assert body["detail"][1]["loc"] == "body.items.0.response"
    assert body["detail"][1]["input"].endswith("... (40000 chars)")


def test_brief_input_keeps_small_values():
    assert brief_input("short") == "short" and brief_input(5) == 5 and brief_input(None) is None
    assert brief_input({"a": 1, "b": 2}) == "{object with keys a, b}"


def test_an_exposed_start_without_a_token_is_refused_before_ray_starts(monkeypatch):
    """start_reward_service (behind `medix-ray serve-rewards`) checks before it starts a cluster; the error is a
    ConfigError, which the CLI prints in one line with exit status 2."""
    import ray

    from deployments.reward_app import start_reward_service
    from medix_ray.config import ConfigError, load_config

    monkeypatch.delenv("MEDIX_RAY_NO_SUCH_TOKEN", raising=False)
    cfg = load_config(None, ["serve.host=0.0.0.0", "serve.auth_token_env=MEDIX_RAY_NO_SUCH_TOKEN"])
    initialized = ray.is_initialized()  # another test of the session may have started the shared cluster
    with pytest.raises(UnsafeServiceError, match="refusing to serve rewards on 0.0.0.0 without a bearer token") as info:
        start_reward_service(cfg)
    assert isinstance(info.value, ConfigError)
    assert ray.is_initialized() == initialized  # refused before any cluster was started
