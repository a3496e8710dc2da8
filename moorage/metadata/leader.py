"""Leader election through the database: which process runs the cluster-wide background jobs.

* PostgreSQL: ``pg_try_advisory_lock`` on a connection of its own, held for as long as this
  process leads.  The lock belongs to the server session, so it goes away with the connection:
  a leader killed with ``-9`` (or cut off from the database) loses it as soon as PostgreSQL sees
  the connection close, and the lock holder checks its connection at every campaign tick -- a
  lost connection is lost leadership.  Advisory locks are per database, so registries on other
  databases of one server do not compete.
* SQLite: an exclusive ``flock`` on a file next to the database.  The kernel drops it when the
  holder dies, however it dies.  SQLite is one machine anyway; this makes the workers (and
  replicas sharing the data directory) elect one.

The scheduler (:mod:`moorage.scheduler`) only sees :class:`LeaderLock`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import text

from .db import Database

log = logging.getLogger("moorage.scheduler")
T = TypeVar("T")

#: Advisory-lock key of the scheduler's leadership ("moorage-s" in ASCII; the migration lock is
#: another key).
LEADER_LOCK_KEY = 0x6D6F6F72616765 + 1
#: Seconds a liveness check of the leader's connection may take before leadership counts as lost.
CHECK_TIMEOUT = 5.0


class LeaderLock(Protocol):
    #: Said in the log line on leadership changes.
    description: str

    async def acquire(self) -> bool:
        """Try to become leader without waiting; True if this process now holds the lock."""

    async def still_held(self) -> bool:
        """Whether the lock this process acquired is still its own (False: leadership lost)."""

    async def release(self) -> None:
        """Give the lock up (idempotent)."""


class PostgresLeaderLock:
    """``pg_try_advisory_lock`` on a dedicated connection (autocommit: never idle in a transaction).

    The connection is kept between attempts (one idle session per replica, no reconnect every
    campaign tick); any failure on it closes it, and with it the lock if it was held.
    """

    def __init__(self, url: str, key: int = LEADER_LOCK_KEY) -> None:
        self.url = url
        self.key = key
        self.description = "PostgreSQL advisory lock"
        self._engine: Any = None
        self._conn: Any = None
        self._held = False

    async def _connection(self) -> Any:
        if self._conn is None:
            from sqlalchemy.ext.asyncio import create_async_engine
            from sqlalchemy.pool import NullPool

            if self._engine is None:
                self._engine = create_async_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            self._conn = await _bounded(self._engine.connect())
        return self._conn

    async def acquire(self) -> bool:
        if self._held:
            return True
        try:
            conn = await self._connection()
            got = (await _bounded(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))).scalar()
        except BaseException:
            await self.release()
            raise
        self._held = bool(got)
        return self._held

    async def still_held(self) -> bool:
        if not self._held or self._conn is None:
            return False
        try:
            # The advisory lock lives as long as the session: a session that answers holds it.
            alive = (await _bounded(self._conn.execute(text("SELECT 1")))).scalar() == 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the session means the lock may be gone
            log.warning("scheduler: leader connection failed (%s: %s); leadership lost", type(exc).__name__, exc)
            alive = False
        if not alive:
            await self.release()
        return bool(alive)

    async def release(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            await _close_quietly(conn)  # ending the session releases the lock
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()


async def _bounded(aw: Awaitable[T]) -> T:
    """``await aw``, a :class:`TimeoutError` after :data:`CHECK_TIMEOUT` seconds.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives in the loop
    iteration where ``aw`` completes (it returns the result instead).  The scheduler's campaign
    task then ran on after :meth:`Scheduler.stop` had cancelled it, and ``stop()`` waited for it
    forever (a hang seen under load in tests/test_scheduler.py).  ``asyncio.timeout`` tells its
    own cancellation from another's and lets the latter through.
    """
    async with asyncio.timeout(CHECK_TIMEOUT):
        return await aw


async def _close_quietly(conn: Any) -> None:
    try:
        await _bounded(conn.close())
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken connection cannot be closed politely; it is gone anyway
        log.debug("scheduler: closing the leader connection: %r", exc)
        try:
            await conn.invalidate()
        except Exception:  # noqa: BLE001 - nothing left to release on a connection that is already dead
            log.debug("scheduler: invalidating the leader connection failed", exc_info=True)


class FileLeaderLock:
    """An exclusive ``flock`` on ``path`` (per open file: two workers of one machine exclude each other)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file lock {path}"
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people looking: who leads
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        return self._fd is not None  # a flock lasts as long as the open file

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops the flock


def leader_lock(database: Database, data_dir: Path) -> LeaderLock:
    """The lock that elects a leader among the processes sharing ``database``."""
    if not database.is_sqlite:
        return PostgresLeaderLock(database.url)
    path = database.url.split(":///", 1)[1].split("?", 1)[0].removeprefix("file:")
    if path and path != ":memory:":
        return FileLeaderLock(Path(path).with_name(Path(path).name + ".leader"))
    return FileLeaderLock(data_dir / "scheduler.leader")
