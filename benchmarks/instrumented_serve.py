#!/usr/bin/env python3
"""``moorage`` with wait/hold timers on what can serialize requests, for ``bench_load.py --instrument``.

Run exactly like the CLI (``instrumented_serve.py serve --addr ... --data ...``).  Before the
server starts it wraps, without changing what they do:

* ``Database.run_write()`` -- the whole await (queue + batch + hand-back), and on the writer
  thread each batch (``BEGIN IMMEDIATE`` .. ``COMMIT``, with the flock wait) and its size;
* event-loop lag: a 50 ms timer's lateness (how long ready callbacks wait for the loop);
* ``Database.write()`` -- time to get in (the single SQLite writer connection, then ``BEGIN
  IMMEDIATE``: the writer-lock wait) and time held (the write transaction);
* every ``ThreadPoolExecutor.submit`` (the loop's default pool that ``asyncio.to_thread`` uses,
  and the others) -- queue wait before a thread picks the job up, and run time, per function;
* ``os.fsync`` -- count and time;
* aiosqlite's ``Connection._execute`` -- every hop to aiosqlite's thread and back (count, time);
* aiobotocore's ``_make_api_call`` -- every S3 request, per operation (count, time).

Every 2 s each process writes its totals as JSON to ``$MOORAGE_INSTRUMENT_DIR/<pid>.json``.
Overhead is a ``perf_counter`` pair per event; use the figures for proportions, not absolutes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

OUT = Path(os.environ.get("MOORAGE_INSTRUMENT_DIR", "/tmp/moorage-instrument"))
_lock = threading.Lock()
#: name -> [count, total seconds, max seconds]
_stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
_writer_pid: int | None = None


def record(name: str, seconds: float) -> None:
    with _lock:
        s = _stats[name]
        s[0] += 1
        s[1] += seconds
        s[2] = max(s[2], seconds)
    _ensure_writer()


def _ensure_writer() -> None:
    """Start this process's dump thread once (again in each forked worker)."""
    global _writer_pid
    if _writer_pid == os.getpid():
        return
    with _lock:
        if _writer_pid == os.getpid():
            return
        _writer_pid = os.getpid()

    def dump() -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        while True:
            time.sleep(2)
            with _lock:
                data = {k: {"count": int(v[0]), "total_s": v[1], "max_s": v[2]} for k, v in _stats.items()}
            tmp = OUT / f"{os.getpid()}.json.tmp"
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(OUT / f"{os.getpid()}.json")

    threading.Thread(target=dump, name="instrument-dump", daemon=True).start()


def _after_fork() -> None:
    global _writer_pid
    _writer_pid = None
    with contextlib.suppress(Exception):
        _stats.clear()


def install() -> None:
    os.register_at_fork(after_in_child=_after_fork)

    # -- thread pools ---------------------------------------------------------------------
    original_submit = concurrent.futures.ThreadPoolExecutor.submit

    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        queued = time.perf_counter()
        pool = (getattr(self, "_thread_name_prefix", "") or "pool").rstrip("_")
        target: Any = fn
        for _ in range(3):  # unwrap functools.partial(contextvars.Context.run, func, ...) (asyncio.to_thread)
            if hasattr(target, "func"):
                target = target.args[0] if getattr(target.func, "__name__", "") == "run" and target.args else target.func
            elif getattr(target, "__name__", "") == "run" and args and callable(args[0]):
                target = args[0]
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__

        def timed(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            record(f"pool[{pool}] queue wait", start - queued)
            try:
                return fn(*a, **kw)
            finally:
                record(f"pool[{pool}] run {name}", time.perf_counter() - start)

        return original_submit(self, timed, *args, **kwargs)

    concurrent.futures.ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]

    # -- fsync ----------------------------------------------------------------------------
    original_fsync = os.fsync

    def fsync(fd: Any) -> None:
        start = time.perf_counter()
        try:
            original_fsync(fd)
        finally:
            record("os.fsync", time.perf_counter() - start)

    os.fsync = fsync

    # -- the SQLite writer ----------------------------------------------------------------
    from moorage.metadata import db as dbmod

    original_write = dbmod.Database.write.__wrapped__  # the generator under @asynccontextmanager

    @contextlib.asynccontextmanager
    async def write(self: Any) -> Any:
        start = time.perf_counter()
        agen = original_write(self)
        conn = await agen.__anext__()
        got = time.perf_counter()
        record("Database.write enter (writer wait + BEGIN)", got - start)
        try:
            yield conn
        except BaseException as exc:
            try:
                await agen.athrow(exc)
            except StopAsyncIteration:
                pass
            finally:
                record("Database.write held (incl. COMMIT)", time.perf_counter() - got)
            raise
        else:
            try:
                await agen.__anext__()
            except StopAsyncIteration:
                pass
            record("Database.write held (incl. COMMIT)", time.perf_counter() - got)

    dbmod.Database.write = write  # type: ignore[method-assign]

    original_run_write = dbmod.Database.run_write
    lag_started: set[int] = set()

    async def run_write(self: Any, fn: Any) -> Any:
        if os.getpid() not in lag_started:
            lag_started.add(os.getpid())
            _start_lag_monitor()
        start = time.perf_counter()
        try:
            return await original_run_write(self, fn)
        finally:
            record("Database.run_write await (queue + txn + back)", time.perf_counter() - start)

    dbmod.Database.run_write = run_write  # type: ignore[method-assign]

    from moorage.metadata import writer as writermod

    original_batch = writermod.SQLiteWriter._run_batch

    def _run_batch(self: Any, conn: Any, lock_fd: Any, jobs: Any) -> None:
        start = time.perf_counter()
        try:
            original_batch(self, conn, lock_fd, jobs)
        finally:
            record("writer thread: batch (flock + BEGIN .. COMMIT)", time.perf_counter() - start)
            record("writer thread: jobs per batch (the 'seconds' are job counts)", float(len(jobs)))

    writermod.SQLiteWriter._run_batch = _run_batch  # type: ignore[method-assign]

    # -- S3 calls (aiobotocore) -----------------------------------------------------------
    try:
        from aiobotocore.client import AioBaseClient
    except ImportError:  # pragma: no cover
        pass
    else:
        original_call = AioBaseClient._make_api_call

        async def _make_api_call(self: Any, operation_name: str, api_params: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original_call(self, operation_name, api_params)
            finally:
                record(f"S3 {operation_name}", time.perf_counter() - start)

        AioBaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]

    # -- aiosqlite thread hops ------------------------------------------------------------
    try:
        import aiosqlite.core as aiocore
    except ImportError:  # pragma: no cover
        return
    original_execute = aiocore.Connection._execute

    async def _execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original_execute(self, fn, *args, **kwargs)
        finally:
            record("aiosqlite hop (queue + run + back)", time.perf_counter() - start)

    aiocore.Connection._execute = _execute  # type: ignore[method-assign]


def _start_lag_monitor() -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    period = 0.05

    def tick(due: float) -> None:
        now = loop.time()
        record("event loop lag (50 ms timer lateness)", max(0.0, now - due))
        loop.call_at(now + period, tick, now + period)

    loop.call_at(loop.time() + period, tick, loop.time() + period)


if __name__ == "__main__":
    install()
    from moorage.cli import main

    sys.argv[0] = "moorage"
    main()
