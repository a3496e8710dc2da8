"""The whole registry app in the test process: ``moorage.composition.build_app`` over SQLite in a temp
dir and the in-memory blob store (:mod:`moorage.storage.memory`).  No subprocess, no Ceph, no
PostgreSQL: a server is up in well under a second, so handler tests run in the unit tier.

Two shapes:

* :func:`app_client` -- an ``aiohttp.test_utils.TestClient`` for ``async`` tests
  (``await client.get("/v2/")``).
* :class:`InProcessRegistry` -- the app on a real loopback socket, served by an event loop in a
  thread, with the attributes tests use on a :class:`tests.support.registry_proc.RegistryProcess`
  (``url``, ``host``, ``port``, ``auth``, ``data_dir``, ``log()``, ``stop()``): the protocol
  modules' synchronous ``requests`` code runs against it unchanged (the ``memory`` backend of
  tests/conftest.py).

What it does not cover, and the real-server tiers do: ``moorage serve`` itself (uvloop, the
connection guard, worker processes, signals, start-up checks), storage and database semantics
of the real backends, and anything that needs the data to outlive the process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from moorage.composition import build_app
from moorage.config import Settings
from moorage.storage.memory import MemoryBlobStore, MemorySpace
from tests.support.registry_proc import RegistryAddress

__all__ = ["InProcessRegistry", "app_client", "inproc_settings"]


@contextlib.contextmanager
def _without_config_env() -> Any:
    """Settings read ``MOORAGE_CONFIG`` (another test's ``load_settings(path)`` may have left it)."""
    saved = os.environ.pop("MOORAGE_CONFIG", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MOORAGE_CONFIG"] = saved


def inproc_settings(data: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app: data (SQLite, claims) under ``data``; metrics off unless
    asked for (prometheus collectors are process-global, and many apps share this process)."""
    overrides.setdefault("metrics_enabled", False)
    overrides.setdefault("addr", "127.0.0.1:5999")  # aiohttp's test server picks its own port
    with _without_config_env():
        return Settings(data=data, **overrides)


@asynccontextmanager
async def app_client(data: Path, *, space: MemorySpace | None = None, **overrides: Any) -> AsyncIterator[TestClient]:
    """``async with app_client(tmp_path) as client:`` -- the app (every default extension) on
    aiohttp's test server; ``client.app`` is the application, ``client.blobs`` the memory store."""
    blobs = MemoryBlobStore(space)
    app = build_app(inproc_settings(data, **overrides), blobs=blobs)
    async with TestClient(TestServer(app)) as client:
        client.blobs = blobs  # type: ignore[attr-defined]
        yield client


class _Tail(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=400)

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


class InProcessRegistry(RegistryAddress):
    """The app served on ``127.0.0.1:<free port>`` by an event loop in a daemon thread (addressed
    like a :class:`tests.support.registry_proc.RegistryProcess`)."""

    kind = "moorage"
    backend = "memory"

    def __init__(
        self,
        workdir: Path,
        *,
        space: MemorySpace | None = None,
        username: str | None = None,
        password: str | None = None,
        **overrides: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.space = space if space is not None else MemorySpace()
        self.overrides = overrides
        self.username, self.password = username, password
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._tail = _Tail()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def log(self, n: int = 60) -> str:
        return "\n".join(list(self._tail.lines)[-n:])

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> InProcessRegistry:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        settings = inproc_settings(self.data_dir, **{"addr": self.host, **self.overrides})
        app = build_app(settings, blobs=MemoryBlobStore(self.space))
        logging.getLogger("moorage").addHandler(self._tail)
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
            await self._runner.setup()  # database migration, storage, extensions' start-up
            await web.SockSite(self._runner, sock).start()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"moorage-inproc-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"in-process registry did not start within {timeout:.0f} s")
        if failure:
            self._thread.join(5)
            raise RuntimeError(f"in-process registry failed to start: {failure[0]!r}") from failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        logging.getLogger("moorage").removeHandler(self._tail)

    def __enter__(self) -> InProcessRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
