"""``Database.first``: the one-statement read of every manifest GET and blob HEAD, without
:meth:`Database.read`'s context managers -- and with the same answers: the first row or None,
a database outage as :class:`DatabaseUnavailable` (503), a bug (bad SQL) as itself."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from moorage.errors import DatabaseUnavailable
from moorage.metadata import db as dbmod


def test_first_row_none_outage_and_bug(tmp_path: Path) -> None:
    path = tmp_path / "m.db"

    async def scenario() -> None:
        database = dbmod.Database(f"sqlite+aiosqlite:///{path}")
        try:
            async with database.write() as conn:
                await conn.execute(text("CREATE TABLE t (x INTEGER, y TEXT)"))
                await conn.execute(text("INSERT INTO t VALUES (1, 'a'), (2, 'b')"))
            row = await database.first(text("SELECT x, y FROM t WHERE x >= :x ORDER BY x"), {"x": 2})
            assert tuple(row) == (2, "b")
            assert await database.first(text("SELECT x FROM t WHERE x = :x"), {"x": 9}) is None
            with pytest.raises(OperationalError):  # no such table: a bug, not an outage
                await database.first(text("SELECT * FROM missing"), {})
            await database.close()  # pooled connections would keep the locker from its exclusive lock
            locker = sqlite3.connect(str(path), isolation_level=None)
            locker.execute("PRAGMA locking_mode=EXCLUSIVE")
            locker.execute("BEGIN IMMEDIATE")
            locker.execute("INSERT INTO t VALUES (3, 'c')")
            locker.execute("COMMIT")
            try:
                with pytest.raises(DatabaseUnavailable) as info:
                    await database.first(text("SELECT count(*) FROM t"), {})
                assert "locked" in info.value.reason and info.value.status == 503
            finally:
                locker.close()
            assert tuple(await database.first(text("SELECT count(*) FROM t"), {})) == (3,)
        finally:
            await database.close()

    asyncio.run(scenario())


def test_another_thread_reads_through_the_pool(tmp_path: Path) -> None:
    """The kept connection is the first reader thread's; a job on a thread of its own (with its
    own loop) that shares the Database reads through the pooled path, with the same answer."""
    import threading

    path = tmp_path / "m.db"
    database = dbmod.Database(f"sqlite+aiosqlite:///{path}")
    stmt = text("SELECT x FROM t WHERE x = :x")

    async def setup_and_read() -> object:
        async with database.write() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (7)"))
        return tuple(await database.first(stmt, {"x": 7}))

    assert asyncio.run(setup_and_read()) == (7,)
    kept = database._hot_conn  # noqa: SLF001
    assert kept is not None
    through_kept: list[str] = []
    kept.set_trace_callback(through_kept.append)
    assert asyncio.run(database.first(stmt, {"x": 7})) == (7,) and len(through_kept) == 1  # this thread: kept
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(tuple(asyncio.run(database.first(stmt, {"x": 7})))))
    worker.start()
    worker.join()
    assert got == [(7,)] and database._hot_conn is kept and len(through_kept) == 1  # noqa: SLF001
    asyncio.run(database.close())


def test_statements_the_kept_connection_cannot_run_as_compiled_take_the_pool(tmp_path: Path) -> None:
    """An IN list (rendered per call) and a missing parameter go the pooled way, with its answers;
    a value written into the statement is passed as SQLAlchemy would."""
    from sqlalchemy import bindparam, column, select, table
    from sqlalchemy.exc import StatementError

    path = tmp_path / "m.db"
    t = table("t", column("x"))
    in_list = select(t.c.x).where(t.c.x.in_(bindparam("xs", expanding=True))).order_by(t.c.x)
    needs_x = select(t.c.x).where(t.c.x == bindparam("x"))
    literal = select(t.c.x).where(t.c.x == 5)

    async def scenario() -> None:
        database = dbmod.Database(f"sqlite+aiosqlite:///{path}")
        try:
            async with database.write() as conn:
                await conn.execute(text("CREATE TABLE t (x INTEGER)"))
                await conn.execute(text("INSERT INTO t VALUES (1), (5), (9)"))
            assert tuple(await database.first(in_list, {"xs": [9, 5]})) == (5,)
            assert tuple(await database.first(literal, {})) == (5,)
            assert tuple(await database.first(needs_x, {"x": 9})) == (9,)
            with pytest.raises(StatementError, match="value is required"):
                await database.first(needs_x, {})
            async with database.read(snapshot=False) as conn:  # what the pooled path says
                with pytest.raises(StatementError, match="value is required"):
                    await conn.execute(needs_x, {})
        finally:
            await database.close()

    asyncio.run(scenario())
