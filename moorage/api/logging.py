"""Structured access log: one JSON object per request, without credentials."""

from __future__ import annotations

import json
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, duration: float) -> None:
        entry = {
            "ts": round(time.time(), 3),
            "remote": request.remote,
            "method": request.method,
            # path only: query strings may carry tokens or digests we needn't repeat
            "path": request.path[:512],
            "status": response.status,
            "bytes": response.body_length,
            "ms": round(duration * 1000, 2),
            "ua": request.headers.get("User-Agent", "")[:200],
        }
        user = request.get("user")
        if user:
            entry["user"] = user
        self.logger.info(json.dumps(entry, separators=(",", ":")))
