"""Running the app: uvloop, TLS, and optional worker processes sharing one port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys

from aiohttp import web

from .api.app import create_app
from .api.logging import JsonAccessLogger
from .config import Settings

log = logging.getLogger("moorage")


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls.certificate:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(settings.tls.certificate), str(settings.tls.key) if settings.tls.key else None)
    return ctx


def _bind(settings: Settings, reuse_port: bool) -> socket.socket:
    host = settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, settings.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _serve(settings: Settings, sock: socket.socket) -> None:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log_class=JsonAccessLogger,
        access_log=logging.getLogger("moorage.access") if settings.access_log else None,
        handle_signals=False,
        # SIGTERM: in-flight requests get 3 s to finish (container runtimes SIGKILL after 10 s);
        # an upload cut off here stays resumable, its session and hash state are in the database.
        shutdown_timeout=3.0,
    )
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=_ssl_context(settings), backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("moorage listening on %s (pid %d)", settings.addr, os.getpid())
    await stop.wait()
    await runner.cleanup()


def _run_worker(settings: Settings, sock: socket.socket) -> None:
    try:
        import uvloop

        uvloop.run(_serve(settings, sock))
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(settings, sock))


def serve(settings: Settings) -> None:
    workers = settings.workers or (os.cpu_count() or 1)
    if workers <= 1:
        _run_worker(settings, _bind(settings, reuse_port=False))
        return
    # Migrate once in the parent so workers don't race on the schema.
    from .metadata.db import Database
    from .api.app import prepare_database

    async def _prepare() -> None:
        db = Database(settings.database_url)
        await prepare_database(settings, db)
        await db.close()

    asyncio.run(_prepare())
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            sock = _bind(settings, reuse_port=True)
            _run_worker(settings, sock)
            os._exit(0)
        children.append(pid)

    def _forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    status = 0
    for pid in children:
        _, code = os.waitpid(pid, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status if status > 0 else 0)
