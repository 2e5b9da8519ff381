"""Credentials out of URLs before they are logged or written.

A judge URL may carry a secret: `https://user:KEY@host/v1`, `https://host/v1?key=KEY`,
`...?api_key=KEY&sig=...`. Everything that logs or writes a URL (the reward service's logs, the
evaluation's scores.json, report.md and submission zip, error messages) passes it through
`redact_url` first; free text that may hold URLs (an exception message) goes through `redact_text`.

    >>> redact_url("https://alice:sk-123@judge.example.org:8443/v1?key=sk-123&model=m")
    'https://***@judge.example.org:8443/v1?key=***&model=m'
    >>> redact_text("judge at http://u:p@h/v1 is unavailable")
    'judge at http://***@h/v1 is unavailable'
    >>> redact_url("smollm2-135m-instruct")   # not a URL: unchanged
    'smollm2-135m-instruct'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

# A query parameter whose name contains one of these words holds a credential.
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|cookie", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """Returns `url` without credentials: user:password@ becomes ***@, secret query values become ***.

    A string without a scheme (a model name, a path) is returned unchanged.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed URL cannot be parsed, so nothing of it can be trusted to be clean
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    fragment = MASK if parts.fragment and _SECRET_PARAM.search(parts.fragment) else parts.fragment
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """Returns `text` with every URL in it passed through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
