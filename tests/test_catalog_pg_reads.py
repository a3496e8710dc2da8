"""The PostgreSQL catalog page read straight through asyncpg (``Database.all``, issue 24).

``MetadataStore.catalog`` on PostgreSQL runs its statement on a pooled connection's asyncpg
connection, without SQLAlchemy's ``Connection``/``Row`` objects (a third of the page's time in
the process).  What must not change, checked against a real PostgreSQL:

* the result: listed repositories only (a manifest each), byte order (``COLLATE "C"``), the
  OCI ``last``/``n`` semantics -- compared page by page with the rule computed in Python, over
  names whose byte order differs from any locale's;
* errors: a killed connection is an outage (``DatabaseUnavailable``: 503) and is not handed out
  again; NUL in ``last`` is the client's text (``TextUnstorable``: 400); a SQL error stays a SQL
  error; a read cancelled half-way (the client went away) leaves the pool whole.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.support.postgres import create_database
from tests.support.scale import repo_name

pytestmark = [pytest.mark.services]

#: Listed (a manifest each) and ordered differently by bytes than by a locale: case, accents,
#: punctuation, a space, a 4-byte character.
ODD = ["zz/E", "zz/e", "zz/É", "zz/é", "zz/a b", "zz/a-b", "zz/a.b", "zz/a_b", "zz/a/b", "zz/ä", "zz/\U0001f600", "Zz"]


async def _database(postgres_url: str) -> Any:
    from moorage.metadata.db import Database
    from tests.support.scale import run_sql
    from tests.test_catalog_scope import EMPTY, LISTED, populate

    url = create_database(postgres_url, f"catpg_{uuid.uuid4().hex[:8]}")
    db = Database(url)
    await db.migrate()
    await populate(url)
    odd = ", ".join("('" + n.replace("'", "''") + "', false, 1.7e9)" for n in ODD)
    await run_sql(
        url,
        [
            f"INSERT INTO repositories (name, public, created_at) VALUES {odd}",
            # the seed's manifest in each of them
            "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) "
            "SELECT r.id, m.digest, m.media_type, m.size, m.payload, m.created_at FROM repositories r, manifests m "
            "WHERE ((r.name LIKE 'zz/%' AND r.name <> 'zz/app') OR r.name = 'Zz') "
            "AND m.repository_id = (SELECT id FROM repositories WHERE name = 'seed/app')",
            # one that had a manifest and lost it: not listed
            "DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = 'zz/a.b')",
            "DELETE FROM manifests WHERE repository_id = (SELECT id FROM repositories WHERE name = 'zz/a.b')",
        ],
    )
    # The rule, read without the catalog's statement (no order, no collation) and sorted by bytes here.
    from sqlalchemy import text

    async with db.read(snapshot=False) as conn:
        rule = "SELECT name FROM repositories WHERE id IN (SELECT repository_id FROM manifests)"
        listed = sorted((await conn.execute(text(rule))).scalars().all(), key=str.encode)
    assert set(ODD) - set(listed) == {"zz/a.b"} and not set(EMPTY) & set(listed)
    assert {*LISTED, repo_name(0, 40), repo_name(39, 40)} <= set(listed) and len(listed) == 66  # + seed/app, big/tags
    return db, listed, EMPTY


def _expected(listed: list[str], n: int | None, last: str | None) -> list[str]:
    after = [x for x in listed if x.encode() > (last or "").encode()]
    return after if n is None else after[:n]


def test_catalog_pages_on_postgres_are_the_listed_names_in_byte_order(postgres_url: str) -> None:
    """Every ``(n, last)`` page equals the rule computed in Python, and the page is read
    without SQLAlchemy's Connection (the fast path; the old code went through ``Database.read``)."""
    from moorage.errors import TextUnstorable
    from moorage.metadata.store import MetadataStore

    async def go() -> None:
        db, listed, empty = await _database(postgres_url)
        store = MetadataStore(db)
        from sqlalchemy import event

        executed: list[str] = []  # statements SQLAlchemy's Connection ran (none on the fast path)
        event.listen(db.read_engine.sync_engine, "before_cursor_execute", lambda *a: executed.append(a[2]))
        try:
            lasts: list[str | None] = [None, "", "\U0010ffff", "a", "zz/", "zz/a", "zz/\U0001f5ff", *listed, *empty, "zz/a.b"]
            for last in lasts:
                for n in (1, 2, 7, 1000, None):
                    assert await store.catalog(n, last) == _expected(listed, n, last), (n, last)
            # the whole catalog, page by page as /v2/_catalog walks it (n + 1 read, n shown)
            walked: list[str] = []
            last = None
            while True:
                page = await store.catalog(4, last)
                walked += page[:3]
                if len(page) <= 3:
                    break
                last = page[2]
            assert walked == listed
            assert executed == []  # PostgreSQL: no SQLAlchemy Connection, cursor or Row per page
            with pytest.raises(TextUnstorable):  # the client's text, not a 500 or a 503
                await store.catalog(10, "a\x00b")
            assert await store.catalog(3, None) == listed[:3]  # the connection is still good
            assert db.read_engine.pool.checkedout() == 0
        finally:
            await db.close()

    asyncio.run(go())


def test_catalog_on_postgres_after_its_connection_was_killed(postgres_url: str) -> None:
    """The pooled connections killed under the registry (a database restart): the first read
    is an outage (503), and -- as on SQLAlchemy's path -- the whole pool is renewed, so the next
    page is read on a fresh connection, not on the next dead one."""
    from moorage.errors import DatabaseUnavailable
    from moorage.metadata.store import MetadataStore

    async def go() -> None:
        db, listed, _ = await _database(postgres_url)
        store = MetadataStore(db)
        try:
            for _ in range(3):
                # several pooled connections (each with the statement prepared)
                pages = await asyncio.gather(*(store.catalog(5, None) for _ in range(6)))
                assert pages == [listed[:5]] * 6 and db.read_engine.pool.checkedin() >= 2
                async with db.write_engine.connect() as other:  # (another pool: it survives)
                    from sqlalchemy import text

                    killed = (
                        await other.execute(
                            text(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            )
                        )
                    ).scalar()
                    await other.commit()
                assert killed and killed >= 1
                await asyncio.sleep(0.2)
                with pytest.raises(DatabaseUnavailable):
                    await store.catalog(5, None)
                assert db.read_engine.pool.checkedout() == 0
                assert await store.catalog(5, listed[0]) == listed[1:6]  # a fresh connection
        finally:
            await db.close()

    asyncio.run(go())


def test_catalog_on_postgres_cancelled_half_way_leaves_the_pool_whole(postgres_url: str) -> None:
    """A page read cancelled at any point (the client hung up) neither leaks its connection nor
    leaves one mid-query in the pool: the following pages are right."""
    from moorage.metadata.store import MetadataStore

    async def go() -> None:
        db, listed, _ = await _database(postgres_url)
        store = MetadataStore(db)
        try:
            for i in range(40):
                task = asyncio.ensure_future(store.catalog(None, None))
                for _ in range(i % 8):
                    await asyncio.sleep(0)
                if i % 5 == 4:
                    await asyncio.sleep(0.0005 * (i % 3))
                task.cancel()
                try:
                    assert await task == listed  # finished before the cancel arrived
                except asyncio.CancelledError:
                    pass
                assert await store.catalog(7, listed[i % len(listed)]) == _expected(listed, 7, listed[i % len(listed)])
            assert db.read_engine.pool.checkedout() == 0
        finally:
            await db.close()

    asyncio.run(go())


def test_sql_error_on_the_fast_path_is_no_outage(postgres_url: str) -> None:
    """A statement PostgreSQL refuses (here: a table that does not exist) raises SQLAlchemy's
    error, as the pooled path would -- not DatabaseUnavailable, which would hide a bug behind
    "retry" -- and its connection goes back to the pool usable."""
    from sqlalchemy import column, select, table
    from sqlalchemy.exc import ProgrammingError

    from moorage.errors import DatabaseUnavailable
    from moorage.metadata.store import MetadataStore

    async def go() -> None:
        db, listed, _ = await _database(postgres_url)
        try:
            missing = select(column("name")).select_from(table("no_such_table"))
            with pytest.raises(ProgrammingError) as info:
                await db.all(missing, {})
            assert not isinstance(info.value, DatabaseUnavailable)
            assert db.read_engine.pool.checkedout() == 0
            assert await MetadataStore(db).catalog(2, None) == listed[:2]
        finally:
            await db.close()

    asyncio.run(go())


def test_concurrent_catalog_pages_on_postgres_share_the_pool(postgres_url: str) -> None:
    """More pages read at once than the pool has connections (10 + 10 overflow): each waits
    for a connection of its own (asyncpg runs one query per connection at a time), every page
    is right, and every connection is back in the pool afterwards."""
    from moorage.metadata.store import MetadataStore

    async def go() -> None:
        db, listed, _ = await _database(postgres_url)
        store = MetadataStore(db)
        try:
            lasts = [None, *listed] * 2
            pages = await asyncio.gather(*(store.catalog(5, last) for last in lasts))
            assert pages == [_expected(listed, 5, last) for last in lasts]
            assert db.read_engine.pool.checkedout() == 0
        finally:
            await db.close()

    asyncio.run(go())
