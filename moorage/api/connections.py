"""Connection guard: head and body timeouts and a connection limit (slowloris, fd exhaustion).

aiohttp has no timeout for reading a request head: a client that sends half a head and then
nothing holds its connection (and a file descriptor) until the keep-alive timeout, an hour by
default; 1,100 of them exhausted the process's descriptors.  Nor does it time out a request body
that stops arriving.  :class:`GuardedSockSite` serves with a subclass of aiohttp's protocol that
adds, per worker process:

* **head timeout**: from the first byte of a request head (or from connect) until the head is
  complete, at most ``http.header_timeout`` seconds;
* **body timeout**: while a handler waits for body bytes, at most ``http.body_timeout`` seconds
  between bytes (a client that pauses mid-upload longer than that is cut off);
* **connection limit**: above ``http.max_connections`` open connections, a new connection gets
  ``503 UNAVAILABLE`` with ``Retry-After`` (after its head arrives, so the client can read it)
  and is closed -- a clear answer rather than ``accept()`` failing with EMFILE.

One timer per process sweeps the open connections once a second (O(connections)), instead of a
timer per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..config import HttpSettings

log = logging.getLogger("moorage.http")

_REFUSED_BODY = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "too many open connections; retry shortly"}]}).encode()
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY
)
#: A refused connection gets this long to send its head before it is closed without an answer.
_REFUSED_GRACE = 5.0
_SWEEP_INTERVAL = 1.0


class ConnectionGuard:
    """Per-process book of open connections and the timer that enforces the limits."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.open: set[GuardedRequestHandler] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.refused = 0
        self.timed_out = 0

    def admit(self, proto: GuardedRequestHandler) -> bool:
        if len(self.open) >= self.settings.max_connections:
            self.refused += 1
            return False
        self.open.add(proto)
        return True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._timer = loop.call_later(_SWEEP_INTERVAL, self._sweep, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for proto in list(self.open):
            reason = proto.overdue(now, self.settings)
            if reason:
                self.timed_out += 1
                log.info("closing connection from %s: %s", proto.peer, reason)
                proto.cut_off()
        self._timer = loop.call_later(_SWEEP_INTERVAL, self._sweep, loop)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol plus the guard's bookkeeping (see the module docstring)."""

    def __init__(self, guard: ConnectionGuard, manager: Any, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._refused = False
        self._refused_transport: asyncio.Transport | None = None
        self._refused_head = b""
        self._refused_timer: asyncio.TimerHandle | None = None
        #: loop time since which we wait for a complete request head (None: not waiting).
        self._head_since: float | None = None
        #: loop time of the last byte received.
        self._last_rx = 0.0
        self.peer = "?"

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        loop = self._loop
        if not self._guard.admit(self):
            self._refused = True
            self._refused_transport = transport  # type: ignore[assignment]
            self._refused_timer = loop.call_later(_REFUSED_GRACE, transport.close)
            return
        self._last_rx = self._head_since = loop.time()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            if self._refused_timer is not None:
                self._refused_timer.cancel()
            return
        self._guard.open.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._refuse(data)
            return
        now = self._loop.time()
        self._last_rx = now
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._head_since = None  # a complete head arrived
        elif self._head_since is None and self._current_request is None and not self._messages:
            self._head_since = now  # bytes of a new head on an idle keep-alive connection

    def eof_received(self) -> None:
        if self._refused:
            return None
        super().eof_received()
        return None

    # -- guard ---------------------------------------------------------------------------
    def overdue(self, now: float, settings: Any) -> str | None:
        """Why this connection should be closed now, or None."""
        if self._head_since is not None:
            if self._current_request is not None or self._messages:
                self._head_since = None
            elif now - self._head_since > settings.header_timeout:
                return f"no complete request head within {settings.header_timeout:g} s"
        request = self._current_request
        if request is not None and not request.content.is_eof():
            # A body is still arriving.  Idle only counts while we are not the slow side:
            # when the body buffer is full, reading is paused and the handler is behind.
            paused = self._reading_paused or self._buffer_paused
            if not paused and now - self._last_rx > settings.body_timeout:
                return f"request body idle for {settings.body_timeout:g} s"
        return None

    def cut_off(self) -> None:
        transport = self.transport
        self.force_close()
        if transport is not None:
            transport.close()

    def _refuse(self, data: bytes) -> None:
        self._refused_head += data[:16384]
        if b"\r\n\r\n" in self._refused_head or len(self._refused_head) >= 16384:
            transport = self._refused_transport
            self._refused_head = b""
            if transport is not None and not transport.is_closing():
                transport.write(_REFUSED)
                transport.close()


class GuardedSockSite(web.SockSite):
    """``web.SockSite`` whose connections are :class:`GuardedRequestHandler` under one guard."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.BaseRunner, sock: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        # aiohttp's Server.__call__ builds a RequestHandler from these same keyword arguments.
        handler_kwargs = dict(server._kwargs)  # noqa: SLF001 - aiohttp pinned (==3.14.5)
        guard = self._guard

        def factory() -> GuardedRequestHandler:
            return GuardedRequestHandler(guard, server, loop=loop, **handler_kwargs)

        guard.start(loop)
        self._server = await loop.create_server(factory, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)

    async def stop(self) -> None:
        self._guard.stop()
        await super().stop()
