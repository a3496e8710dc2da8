"""The SQLite writer thread (moorage/metadata/writer.py): group commit, savepoints, several
processes writing at once, and the interactive ``async with db.write()`` face on top of it."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from moorage.metadata.db import Database
from moorage.metadata.writer import SQLiteWriter, run_inline

REPO = Path(__file__).resolve().parents[1]


def _database(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "w.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    con.commit()
    con.close()
    return Database(f"sqlite+aiosqlite:///{path}"), path


def _rows(path: Path) -> dict[str, int]:
    con = sqlite3.connect(path)
    try:
        return dict(con.execute("SELECT k, v FROM t").fetchall())
    finally:
        con.close()


def _insert(key: str, value: int = 1):  # noqa: ANN202
    def fn(conn: Connection) -> str:
        conn.execute(text("INSERT INTO t (k, v) VALUES (:k, :v)"), {"k": key, "v": value})
        return key

    return fn


def _hold_thread(writer: SQLiteWriter) -> tuple[threading.Event, threading.Event]:
    """A first job that blocks the writer thread until released, so later jobs pile up."""
    started, release = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> None:
        started.set()
        assert release.wait(10)

    return started, release, blocker  # type: ignore[return-value]


def test_group_commit_one_failing_job_rolls_back_alone(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    assert db.writer is not None
    started, release, blocker = _hold_thread(db.writer)  # type: ignore[misc]

    class Refused(Exception):
        pass

    def failing(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t (k, v) VALUES ('bad', 1)"))  # written, then rolled back
        raise Refused("no")

    async def main() -> list[object]:
        first = asyncio.ensure_future(db.run_write(blocker))
        await asyncio.to_thread(started.wait, 10)
        jobs = [
            db.run_write(_insert("a")),
            db.run_write(failing),
            db.run_write(_insert("b")),
            db.run_write(_insert("dup")),
            db.run_write(_insert("dup", 2)),
            db.run_write(_insert("c")),
        ]
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0.2)  # every job is queued behind the blocker
        release.set()
        await first
        out = await asyncio.gather(*tasks, return_exceptions=True)
        # all six ran in one transaction: the blocker's batch, then theirs
        assert db.writer.batches == 2, db.writer.batches  # type: ignore[union-attr]
        await db.close()
        return out

    out = asyncio.run(main())
    assert out[0] == "a" and out[2] == "b" and out[3] == "dup" and out[5] == "c"
    assert isinstance(out[1], Refused)
    assert "UNIQUE" in str(out[4])  # the second 'dup' violates the key: only it is rolled back
    assert _rows(path) == {"a": 1, "b": 1, "dup": 1, "c": 1}


def test_job_that_ends_the_whole_transaction_does_not_lose_the_others(tmp_path: Path) -> None:
    """When SQLite aborts the whole transaction (full disk, I/O error), the jobs that had
    succeeded in it are run again and committed; only the failing job fails."""
    db, path = _database(tmp_path)
    assert db.writer is not None
    started, release, blocker = _hold_thread(db.writer)  # type: ignore[misc]

    def aborting(conn: Connection) -> None:
        conn.exec_driver_sql("ROLLBACK")  # what SQLite does itself on SQLITE_FULL
        raise OSError("disk full")

    async def main() -> list[object]:
        first = asyncio.ensure_future(db.run_write(blocker))
        await asyncio.to_thread(started.wait, 10)
        tasks = [asyncio.ensure_future(db.run_write(f)) for f in (_insert("x"), aborting, _insert("y"))]
        await asyncio.sleep(0.2)
        release.set()
        await first
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()
        return out

    out = asyncio.run(main())
    assert out[0] == "x" and out[2] == "y" and isinstance(out[1], OSError)
    assert _rows(path) == {"x": 1, "y": 1}


def test_result_is_handed_back_only_after_commit(tmp_path: Path) -> None:
    db, path = _database(tmp_path)

    async def main() -> dict[str, int]:
        await db.run_write(_insert("k", 7))
        seen = _rows(path)  # another connection: the row is committed already
        await db.close()
        return seen

    assert asyncio.run(main()) == {"k": 7}


def test_interactive_write_commits_and_rolls_back(tmp_path: Path) -> None:
    db, path = _database(tmp_path)

    async def main() -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t (k, v) VALUES ('i', 1)"))
            await asyncio.sleep(0.01)  # other awaits inside an interactive transaction are allowed
            await conn.execute(text("UPDATE t SET v = 2 WHERE k = 'i'"))
        with pytest.raises(ZeroDivisionError):
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t (k, v) VALUES ('gone', 1)"))
                1 / 0  # noqa: B018
        # run_write jobs and interactive transactions interleave on the one connection
        await asyncio.gather(*(db.run_write(_insert(f"j{i}")) for i in range(20)), *(_interactive(db, f"w{i}") for i in range(5)))
        await db.close()

    asyncio.run(main())
    rows = _rows(path)
    assert rows.pop("i") == 2 and "gone" not in rows
    assert set(rows) == {f"j{i}" for i in range(20)} | {f"w{i}" for i in range(5)}


async def _interactive(db: Database, key: str) -> None:
    async with db.write() as conn:
        await conn.execute(text("INSERT INTO t (k, v) VALUES (:k, 1)"), {"k": key})


def test_cancelled_interactive_waiter_does_not_wedge_the_writer(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    assert db.writer is not None
    started, release, blocker = _hold_thread(db.writer)  # type: ignore[misc]

    async def main() -> None:
        first = asyncio.ensure_future(db.run_write(blocker))
        await asyncio.to_thread(started.wait, 10)
        waiting = asyncio.ensure_future(_interactive(db, "never"))
        await asyncio.sleep(0.1)
        waiting.cancel()  # gives up while queued behind the blocker
        release.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await asyncio.wait_for(db.run_write(_insert("after")), 10) == "after"
        await db.close()

    asyncio.run(main())
    assert _rows(path) == {"after": 1}


def test_interactive_waiter_cancelled_just_after_the_hand_over_does_not_wedge_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel arrives after the thread handed the connection over, before the waiting task
    resumed (a scheduler job cancelled at shutdown): the transaction is rolled back and the
    writer goes on.  It used to wait for that transaction forever (``serve`` then hung in
    ``close()`` after SIGTERM)."""
    import moorage.metadata.writer as writer_module

    db, path = _database(tmp_path)
    handed: list[object] = []
    waiting: asyncio.Future[None] | None = None

    def hand_over_then_cancel(job, conn):  # type: ignore[no-untyped-def]
        original(job, conn)
        handed.append(job)
        assert waiting is not None
        waiting.cancel()  # same loop iteration: the task has not resumed yet

    original = writer_module._hand_over
    monkeypatch.setattr(writer_module, "_hand_over", hand_over_then_cancel)

    async def main() -> None:
        nonlocal waiting
        waiting = asyncio.ensure_future(_interactive(db, "never"))
        try:
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert handed, "the connection was never handed over"
            assert await asyncio.wait_for(db.run_write(_insert("after")), 10) == "after"
        finally:
            for job in handed:  # a wedged writer must fail this test, not hang it in close()
                job.done.set()  # type: ignore[attr-defined]
            await db.close()

    asyncio.run(main())
    assert _rows(path) == {"after": 1}


def test_run_inline_refuses_a_hook_that_suspends() -> None:
    async def fine() -> int:
        return 3

    async def suspends() -> None:
        await asyncio.sleep(0)

    assert run_inline(fine()) == 3
    with pytest.raises(RuntimeError, match="other than SQL"):
        run_inline(suspends())


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from sqlalchemy import text
    from moorage.metadata.db import Database

    async def main(path, tag, n):
        db = Database(f"sqlite+aiosqlite:///{path}")
        def job(i):
            def fn(conn):
                conn.execute(text("INSERT INTO t (k, v) VALUES (:k, 1)"), {"k": f"{tag}-{i}"})
                conn.execute(text("UPDATE t SET v = v + 1 WHERE k = 'counter'"))
            return fn
        async def interactive(i):
            async with db.write() as conn:
                await conn.execute(text("UPDATE t SET v = v + 1 WHERE k = 'counter'"))
                await conn.execute(text("INSERT INTO t (k, v) VALUES (:k, 1)"), {"k": f"{tag}-i{i}"})
        results = await asyncio.gather(*(db.run_write(job(i)) for i in range(n)),
                                       *(interactive(i) for i in range(n // 10)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        await db.close()
        print(f"errors={len(errors)} {errors[:1]!r}")
        sys.exit(1 if errors else 0)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


def test_two_processes_write_at_once_without_database_is_locked(tmp_path: Path) -> None:
    """Two serving processes (``--workers 2``) and a foreign writer holding the lock for a
    while: every transaction commits, none fails with 'database is locked'."""
    db, path = _database(tmp_path)
    asyncio.run(db.close())
    con = sqlite3.connect(path)
    con.execute("INSERT INTO t (k, v) VALUES ('counter', 0)")
    con.commit()
    con.close()
    n = 400
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), tag, str(n)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    # A writer that knows nothing of the flock (the sqlite3 shell, an old Moorage) takes the
    # write lock three times for 300 ms meanwhile: the writers wait for it, they don't fail.
    foreign = sqlite3.connect(path, timeout=30, isolation_level=None)
    for _ in range(3):
        time.sleep(0.1)
        foreign.execute("BEGIN IMMEDIATE")
        foreign.execute("INSERT INTO t (k, v) VALUES (?, 1)", (f"foreign-{time.monotonic_ns()}",))
        time.sleep(0.3)
        foreign.execute("COMMIT")
    foreign.close()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows = _rows(path)
    assert rows["counter"] == 2 * (n + n // 10)
    for tag in ("p1", "p2"):
        assert all(f"{tag}-{i}" in rows for i in range(n))
        assert all(f"{tag}-i{i}" in rows for i in range(n // 10))
