"""A webhook receiver for the tests: a small aiohttp server on 127.0.0.1 in a thread of its own.

It logs every request (path, headers, raw body, arrival time) and answers according to its
mode: ``ok`` (204), ``fail`` (500), ``hang`` (holds the request until stopped or ``hang_for``
seconds).  It can be stopped and started again on the same port (a receiver that is down).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.registry_proc import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        want = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("X-Moorage-Signature", ""), want)

    @property
    def event_id(self) -> str:
        return self.headers.get("X-Moorage-Event-Id", "")


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    mode: str = "ok"
    hang_for: float = 60.0
    log: list[Received] = field(default_factory=list)
    hanging: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.log.append(Received(request.path, dict(request.headers), body, time.time()))
        if self.mode == "hang":
            self.hanging += 1
            try:
                await asyncio.sleep(self.hang_for)
            finally:
                self.hanging -= 1
        if self.mode == "fail":
            return web.Response(status=500, text="receiver says no")
        return web.Response(status=204)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="webhook-receiver")
            self._thread.start()
        return self._loop

    def _call(self, coro: Any, timeout: float = 15) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop()).result(timeout)

    def start(self) -> Receiver:
        async def go() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

        self._call(go())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            self._call(runner.cleanup(), timeout=30)

    def close(self) -> None:
        self.stop()
        if self._loop is not None:

            async def cancel_rest() -> None:
                rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in rest:
                    t.cancel()
                await asyncio.gather(*rest, return_exceptions=True)

            self._call(cancel_rest())
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop = None

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.log if path is None or r.path == path]

    def wait_for(self, n: int, path: str | None = None, timeout: float = 60.0) -> list[Received]:
        """The first ``n`` requests (to ``path``), waiting (bounded) for them to arrive."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received(path)
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"receiver got {len(got)} of {n} requests to {path or 'any path'} "
                    f"within {timeout:.0f}s: {[r.body[:200] for r in got]}"
                )
            time.sleep(0.1)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
