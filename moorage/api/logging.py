"""Structured access log: one JSON object per request, without credentials."""

from __future__ import annotations

import json
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .common import BODY_BYTES


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
        entry = {
            "ts": round(time.time(), 3),
            "remote": request.remote,
            "method": request.method,
            # path only: query strings may carry tokens or digests we needn't repeat
            "path": request.path[:512],
            "status": response.status,
            "bytes": body_bytes_sent(request, response),
            "ms": round(duration * 1000, 2),
            "ua": request.headers.get("User-Agent", "")[:200],
        }
        user = request.get("user")
        if user:
            entry["user"] = user
        # the object as the message (any handler writes it); the fields for moorage.logformat's text form
        self.logger.info(json.dumps(entry, separators=(",", ":")), extra={"access": entry})
