"""Structured access log: one JSON object per request, without credentials.

The line goes through :class:`~moorage.api.log_redaction.RedactCredentials` like every record,
unless it is known to come out unchanged: the only parts of it a client chooses are the method,
path, User-Agent, user and address (the rest are numbers and fixed keys, and a trigger word of
the redaction cannot reach across a field's quotes), so when :func:`~moorage.api.log_redaction.needs_redaction`
finds nothing in those values as the line encodes them, the line is clean as it is.  That answer
is kept per value set (a client repeats its requests), which spares the filter's look at
~250 characters -- about 8 us, a thirtieth of a manifest GET's CPU -- on nearly every request.
"""

from __future__ import annotations

import json
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .common import BODY_BYTES
from .log_redaction import needs_redaction

#: (method, path, User-Agent, user, address) as logged -> whether the line needs the filter's passes.
_NEEDS_REDACTION: dict[tuple[str | None, ...], bool] = {}
#: Value sets remembered (a dict of short tuples: well under a MiB); cleared when full.
_NEEDS_REDACTION_LIMIT = 4096


def _line_needs_redaction(values: tuple[str | None, ...]) -> bool:
    found = _NEEDS_REDACTION.get(values)
    if found is None:
        if len(_NEEDS_REDACTION) >= _NEEDS_REDACTION_LIMIT:
            _NEEDS_REDACTION.clear()
        # encoded as the line encodes them (JSON escapes included: ``\n`` + "egotiate" is a trigger there)
        found = _NEEDS_REDACTION[values] = needs_redaction(json.dumps(values))
    return found


def _head_size(request: BaseRequest, response: StreamResponse) -> int:
    """Bytes of the status line and headers as aiohttp serialises them (``k: v\\r\\n``)."""
    version = request.version
    size = len(f"HTTP/{version[0]}.{version[1]} {response.status} {response.reason}\r\n".encode())
    for key, value in response.headers.items():
        size += len(key.encode()) + len(value.encode()) + 4
    return size + 2


def body_bytes_sent(request: BaseRequest, response: StreamResponse) -> int:
    """Body bytes sent: what sendfile reported (aiohttp never sees those), else aiohttp's count
    of bytes written minus the head; always 0 for HEAD."""
    if request.method == "HEAD":
        return 0
    sent = response.get(BODY_BYTES)
    if sent is not None:
        return int(sent)
    body = getattr(response, "body", None)
    if isinstance(body, bytes) and response.body_length >= len(body):  # written whole: its length, no head to subtract
        return len(body)
    return max(0, response.body_length - _head_size(request, response))


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, duration: float) -> None:
        remote, method = request.remote, request.method
        # path only: query strings may carry tokens or digests we needn't repeat
        path, ua = request.path[:512], request.headers.get("User-Agent", "")[:200]
        entry = {
            "ts": round(time.time(), 3),
            "remote": remote,
            "method": method,
            "path": path,
            "status": response.status,
            "bytes": body_bytes_sent(request, response),
            "ms": round(duration * 1000, 2),
            "ua": ua,
        }
        user = request.get("user")
        if user:
            entry["user"] = user
        # the object as the message (any handler writes it); the fields for moorage.logformat's text form
        extra: dict[str, object] = {"access": entry}
        if not _line_needs_redaction((method, path, ua, user or None, remote)):
            extra["_moorage_redacted"] = True  # nothing in it to redact: the filter passes it as it is
        self.logger.info(json.dumps(entry, separators=(",", ":")), extra=extra)
