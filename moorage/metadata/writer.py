"""SQLite's write path: one thread, one connection, group commit.

Why a thread of its own: SQLite admits one writer at a time, so a write transaction must hold
the lock for as short a time as possible.  Through aiosqlite every statement of a transaction
was a round trip to aiosqlite's thread and back through the (busy) event loop -- ~13 hops per
transaction, the lock held for as long as the loop took to get back to the transaction's
coroutine (6-18 ms per transaction, measured in benchmarks/PROFILE-load.md).  Here a write
transaction is one synchronous function ``fn(conn)`` that runs on the writer thread from
``BEGIN IMMEDIATE`` to ``COMMIT``: one hop to the thread and one back per *batch*, the lock
held only while SQL runs.

Group commit: every job queued while the previous batch ran goes into the next single
``BEGIN IMMEDIATE ... COMMIT``, each job inside a ``SAVEPOINT`` of its own, so a job that raises
is rolled back alone (the caller gets its exception) while the others commit.  A job's result
is handed back only after the ``COMMIT`` succeeded: nothing is acknowledged before it is
recorded.  If an error leaves no transaction to roll back to (SQLite aborts the whole
transaction on a full disk, an I/O error ...), the jobs that had succeeded are run again in a
fresh transaction; jobs are functions of the database and their arguments, so re-running a
rolled-back job is safe.

Several processes (``serve --workers N``, a CLI command next to the server): SQLite's busy
handler *sleeps* with back-off while another connection holds the write lock (up to 100 ms a
nap), which measured as waits of seconds under load.  The serving processes therefore queue on
an ``flock`` of ``<database>.writer-lock`` before ``BEGIN IMMEDIATE`` (the kernel wakes the
next waiter the moment the holder lets go), and a writer that holds no flock (an older
Moorage, the sqlite3 shell) is waited for by retrying ``BEGIN IMMEDIATE`` every
:data:`BUSY_RETRY` seconds.

:meth:`SQLiteWriter.transaction` keeps the older interactive shape (``async with db.write()``,
statements awaited one by one, possibly with other awaits between them) for the callers that
are not on a hot path: the thread opens the transaction, hands its connection to the event
loop, waits until the caller is done and commits (two hops per transaction, statements run on
the loop as the read path's do).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

log = logging.getLogger("moorage.metadata.writer")

T = TypeVar("T")

#: Seconds between two ``BEGIN IMMEDIATE`` attempts while another connection holds the lock.
BUSY_RETRY = 0.002
#: How long a writer waits for the lock before its batch fails (the old busy_timeout).
BUSY_DEADLINE = 60.0
#: Most jobs in one transaction (bounds the work a failure would redo).
MAX_BATCH = 256


class _Job(Generic[T]):
    """One synchronous write transaction and the future its caller awaits."""

    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[Connection], T], future: asyncio.Future[T], loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.future, self.loop = fn, future, loop


class _Interactive:
    """An ``async with db.write()`` transaction: the thread opens it and waits until it ends."""

    __slots__ = ("ready", "loop", "done", "commit", "finished")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: asyncio.Future[Connection] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.done = threading.Event()
        self.commit = False


_STOP = object()


class SQLiteWriter:
    """The one writing connection of this process, owned by one daemon thread."""

    def __init__(self, engine: Any, lock_path: Path | None = None) -> None:
        #: A synchronous SQLAlchemy engine whose connections have busy_timeout 0, autocommit
        #: at the driver level (we issue BEGIN/COMMIT) and the usual pragmas.
        self._engine = engine
        self._lock_path = lock_path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pid = os.getpid()
        #: Figures for benchmarks/tests: transactions committed, jobs in them.
        self.batches = 0
        self.jobs = 0

    # -- the event loop's side ------------------------------------------------------------
    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` as (part of) one write transaction; its result once committed.

        ``fn`` must not block on anything but SQL (it runs on the writer thread, every other
        write waits for it) and must not commit or roll back itself.  If the awaiting task is
        cancelled, the job still runs (it may already have): like a request whose client went
        away after the server committed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._ensure_thread()
        self._queue.put(_Job(fn, future, loop))
        return await future

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """An interactive write transaction (the connection is used from the event loop)."""
        loop = asyncio.get_running_loop()
        job = _Interactive(loop)
        self._ensure_thread()
        self._queue.put(job)
        try:
            conn = await job.ready
        except BaseException:
            # Cancelled before the thread handed the connection over: _hand_over sees the
            # cancelled future and ends the transaction itself.  Cancelled after the hand-over
            # but before this task resumed (the future already holds the connection, so the
            # cancel cannot reach it): the transaction is ours, end it here (rolled back), or
            # the thread waits for it forever, holding the write lock -- every later write, and
            # close() at shutdown, hung behind it.
            if job.ready.done() and not job.ready.cancelled() and job.ready.exception() is None:
                job.done.set()
            raise
        try:
            yield conn
            job.commit = True
        finally:
            job.done.set()
            # The COMMIT runs on the thread; the caller continues once it is done (shielded,
            # so a cancellation now cannot leave us not knowing whether it committed).
            await asyncio.shield(job.finished)

    def close(self) -> None:
        """Finish the queued jobs, then stop the thread and close the connection."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        self._engine.dispose()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked with a writer running: that thread is not here
            self._pid = os.getpid()
            self._queue = queue.SimpleQueue()
            self._thread = None
            self._start_lock = threading.Lock()
            self._engine.dispose(close=False)  # the parent's connection stays the parent's
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._main, name="moorage-sqlite-writer", daemon=True)
                    self._thread.start()

    # -- the writer thread ----------------------------------------------------------------
    def _main(self) -> None:
        lock_fd = self._open_lock()
        conn: Connection | None = None
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    batch.append(more)
                try:
                    if conn is None:
                        conn = self._engine.connect()
                    jobs = [j for j in batch if isinstance(j, _Job)]
                    if jobs:
                        self._run_batch(conn, lock_fd, jobs)
                    for item in batch:
                        if isinstance(item, _Interactive):
                            self._run_interactive(conn, lock_fd, item)
                except BaseException as exc:  # never leave a caller waiting for a dead thread
                    log.exception("SQLite writer: batch failed")
                    self._settle([(j, False, exc) for j in batch if isinstance(j, _Job)])
                    for item in batch:
                        if isinstance(item, _Interactive):
                            item.loop.call_soon_threadsafe(_fail_ready, item, exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                if stop:
                    return
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            if lock_fd is not None:
                os.close(lock_fd)

    def _open_lock(self) -> int | None:
        if self._lock_path is None:
            return None
        try:
            return os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # read-only directory: then SQLite itself will refuse writes
            log.warning("cannot open %s (%s): writers of several processes fall back to retrying", self._lock_path, exc)
            return None

    def _begin(self, conn: Connection, lock_fd: int | None) -> None:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        deadline = time.monotonic() + BUSY_DEADLINE
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    self._unlock(lock_fd)
                    raise
            conn.rollback()  # SQLAlchemy's own bookkeeping: no transaction began
            time.sleep(BUSY_RETRY)

    @staticmethod
    def _unlock(lock_fd: int | None) -> None:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _run_batch(self, conn: Connection, lock_fd: int | None, jobs: list[_Job[Any]]) -> None:
        pending = jobs
        while pending:
            outcomes: list[tuple[_Job[Any], bool, Any]] = []
            redo: list[_Job[Any]] = []
            try:
                self._begin(conn, lock_fd)
            except BaseException as exc:
                self._settle([(job, False, exc) for job in pending])
                return
            try:
                single = len(pending) == 1
                for i, job in enumerate(pending):
                    if not single:
                        conn.exec_driver_sql("SAVEPOINT job")
                    try:
                        value = job.fn(conn)
                    except BaseException as exc:
                        outcomes.append((job, False, exc))
                        if single:
                            break
                        if not _in_transaction(conn):
                            # SQLite ended the whole transaction: what succeeded so far is
                            # gone too; run those again, then the rest.
                            redo = [j for j, ok, _ in outcomes if ok] + pending[i + 1 :]
                            outcomes = [o for o in outcomes if not o[1]]
                            break
                        conn.exec_driver_sql("ROLLBACK TO job")
                        conn.exec_driver_sql("RELEASE job")
                    else:
                        outcomes.append((job, True, value))
                        if not single:
                            conn.exec_driver_sql("RELEASE job")
                if _in_transaction(conn):
                    if single and not outcomes[0][1]:
                        conn.rollback()
                    else:
                        conn.commit()
                else:
                    conn.rollback()
            except BaseException as exc:
                # BEGIN/SAVEPOINT/COMMIT itself failed: nothing of this batch is recorded.
                with contextlib.suppress(Exception):
                    conn.rollback()
                outcomes = [(job, False, exc) for job in pending]
                redo = []
            finally:
                self._unlock(lock_fd)
            self.batches += 1
            self.jobs += len(outcomes)
            self._settle(outcomes)
            pending = redo

    def _run_interactive(self, conn: Connection, lock_fd: int | None, job: _Interactive) -> None:
        try:
            self._begin(conn, lock_fd)
        except BaseException as exc:
            job.loop.call_soon_threadsafe(_fail_ready, job, exc)
            return
        try:
            job.loop.call_soon_threadsafe(_hand_over, job, conn)
            job.done.wait()
            if job.commit:
                conn.commit()
            else:
                conn.rollback()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.rollback()
            job.loop.call_soon_threadsafe(_finish, job, exc)
        else:
            job.loop.call_soon_threadsafe(_finish, job, None)
        finally:
            self._unlock(lock_fd)
            self.batches += 1

    @staticmethod
    def _settle(outcomes: list[tuple[_Job[Any], bool, Any]]) -> None:
        """Hand results back: one wake-up per event loop, not one per job."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Any], bool, Any]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[tuple[_Job[Any], bool, Any]]) -> None:
    for job, ok, value in items:
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _hand_over(job: _Interactive, conn: Connection) -> None:
    if job.ready.cancelled():
        job.commit = False
        job.done.set()
        job.finished.cancel()
    else:
        job.ready.set_result(conn)


def _fail_ready(job: _Interactive, exc: BaseException) -> None:
    if not job.ready.done():
        job.ready.set_exception(exc)


def _finish(job: _Interactive, exc: BaseException | None) -> None:
    if job.finished.done():
        return
    if exc is None:
        job.finished.set_result(None)
    else:
        job.finished.set_exception(exc)


def _in_transaction(conn: Connection) -> bool:
    return bool(conn.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc.orig)
    return "locked" in text or "busy" in text


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, synchronously.

    For async hooks (``TagGuard``) called from inside a synchronous write transaction: their
    ``await conn.execute(...)`` runs the statement at once.  A hook that really suspends
    (waits for I/O) cannot run inside a write transaction and is refused.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a hook awaited something other than SQL inside a write transaction")
