"""The reward service's doors: who may call it, how much they may send, what a refusal says.

Pure HTTP/ASGI logic with no Ray dependency, wired into the Serve app by `deployments/reward_app.py`:

- `check_auth_policy`: a service bound to a non-loopback host refuses to start without a bearer
  token unless `serve.allow_unauthenticated` is true (then it warns); on loopback it warns.
- `token_matches`: the bearer token compared in constant time.
- `BodyLimit`: an ASGI middleware that answers 413 to a body over the limit before anything parses
  it: at once from `Content-Length`, or as soon as a streamed body passes the limit.
- `validation_error_body`: a 422 body that names each bad field and the problem, with the
  offending input shortened (a 5,000-item request does not get its whole body back).

    >>> try:
    ...     check_auth_policy("0.0.0.0", token="", allow_unauthenticated=False, token_env="MEDIX_RAY_SERVE_TOKEN")
    ... except UnsafeServiceError as exc:
    ...     print(str(exc)[:59])
    refusing to serve rewards on 0.0.0.0 without a bearer token
    >>> token_matches("Bearer s3cret", "s3cret"), token_matches("Bearer wrong", "s3cret"), token_matches(None, "s3cret")
    (True, False, False)
    >>> brief_input(list(range(5000)))
    '[list of 5000 items]'
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException

from medix_ray.config import ConfigError

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 10
MAX_INPUT_CHARS = 120


class UnsafeServiceError(ConfigError):
    """The service would accept unauthenticated calls from beyond this machine; the message says how to fix it
    (a config error: the CLI prints it in one line and exits 2)."""


def is_loopback(host: str) -> bool:
    """Returns whether `host` (an address or `localhost`) only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # another host name: it may resolve to any interface
        return False


def check_auth_policy(host: str | Sequence[str], *, token: str, allow_unauthenticated: bool, token_env: str) -> None:
    """Raises UnsafeServiceError for a non-loopback bind without a token (unless allowed); warns when it lets
    an unauthenticated service start. `host` is the bind address, or all the addresses the service is bound to."""
    if token:
        return
    hosts = [host] if isinstance(host, str) else list(host)
    exposed = [h for h in hosts if not is_loopback(h)]
    if exposed and not allow_unauthenticated:
        raise UnsafeServiceError(
            f"refusing to serve rewards on {', '.join(exposed)} without a bearer token: set {token_env} in the "
            "environment of the cluster's processes, or serve.allow_unauthenticated=true to accept "
            "unauthenticated callers"
        )
    where = ", ".join(hosts)
    if exposed:
        logger.warning(
            "reward service on %s accepts UNAUTHENTICATED requests from the network "
            "(serve.allow_unauthenticated=true and %s is empty)",
            where,
            token_env,
        )
    else:
        logger.warning(
            "reward service on %s has no bearer token (%s is empty): any process on this machine may call it",
            where,
            token_env,
        )


def token_matches(authorization: str | None, token: str) -> bool:
    """Returns whether an Authorization header carries `Bearer <token>`, compared in constant time."""
    expected = f"Bearer {token}".encode()
    given = (authorization or "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, expected)


class BodyTooLargeError(HTTPException):
    """A request body passed the limit while it was being read. An HTTPException, so that a framework reading
    the body (FastAPI) answers it as a 413 instead of wrapping it as a parse error (400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body of more than {limit} bytes is over the limit of {limit} bytes")


def _plain_response(status: int, message: str) -> list[dict[str, Any]]:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


class BodyLimit:
    """ASGI middleware: request bodies longer than `max_bytes()` get 413 before the application parses them.

    `max_bytes` is a callable so that the limit can come from the config after the app is built.
    """

    def __init__(self, app: Callable, max_bytes: Callable[[], int]):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Mapping[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                for message in _plain_response(400, "invalid Content-Length header"):
                    await send(message)
                return
            if int(declared) > limit:
                await self._too_large(send, limit, f"{int(declared)} bytes")
                return
        received = 0
        started = False

        async def limited_receive() -> Mapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Mapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await self._too_large(send, limit, f"more than {limit} bytes")

    @staticmethod
    async def _too_large(send: Callable, limit: int, size: str) -> None:
        for message in _plain_response(413, f"request body of {size} is over the limit of {limit} bytes"):
            await send(message)


def brief_input(value: Any, limit: int = MAX_INPUT_CHARS) -> Any:
    """Returns a short stand-in for an offending input: containers by their size, long text cut."""
    if isinstance(value, list | tuple):
        return f"[list of {len(value)} items]"
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:8]))
        return "{object with keys " + keys + (", ..." if len(value) > 8 else "") + "}"
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} chars)"
    if value is None or isinstance(value, bool | int | float):
        return value
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def validation_error_body(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Returns the 422 body: per bad field (the first 10) its location, the problem and the input, shortened."""
    return {
        "detail": [
            {
                "loc": ".".join(str(part) for part in e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
                "input": brief_input(e.get("input")),
            }
            for e in list(errors)[:MAX_REPORTED_ERRORS]
        ],
        "errors": len(errors),
    }
