"""Issue 24 at a size CI affords: the catalog walks its index, the GC's mark phase has bounded memory.

Registries are built by cloning one image's rows in SQL (tests/support/scale.py): 50,000
repositories on PostgreSQL in seconds.  No timing is asserted:

* the catalog's statements (a page at the start and in the middle, the per-user ranges of
  ``catalog_in``, a tags-list page of a repository with many tags) are EXPLAINed: they must be
  ordered index range scans -- no Seq Scan of ``repositories``/``tags``, no sort of them;
* ``moorage gc --dry-run --grace 0`` runs as a child process on 5,000 and on 50,000 manifests; its
  peak RSS (its own ``VmHWM``) must not grow with the number of manifests (the old mark phase held the
  whole index: ~2.5 KB per manifest, +110 MiB between the two sizes).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import create_database
from tests.support.registry_proc import REPO_ROOT
from tests.support.scale import clone_sql, repo_name, run_sql, run_with_peak_rss, seed_sql

pytestmark = [pytest.mark.services, pytest.mark.scaleout]

BIG = 50_000
SMALL = 5_000
TAGS_IN_BIG = 20_000
#: Peak RSS may differ this much between the two sizes (allocator noise, one batch of rows).
RSS_SLACK_MIB = 25.0


def _migrate(url: str) -> None:
    from moorage.metadata.db import Database

    async def go() -> None:
        db = Database(url)
        try:
            await db.migrate()
        finally:
            await db.close()

    asyncio.run(go())


def _build(url: str, n: int, tags_in_big: int = 0) -> None:
    _migrate(url)
    sqlite = url.startswith("sqlite")
    asyncio.run(run_sql(url, seed_sql(sqlite) + clone_sql(n, tags_in_big, sqlite)))


@pytest.fixture(scope="module")
def big_pg(postgres_url: str) -> str:
    url = create_database(postgres_url, f"scale_{uuid.uuid4().hex[:8]}")
    _build(url, BIG, TAGS_IN_BIG)
    return url


def _named_sql(stmt: Any, dialect: Any) -> tuple[str, dict[str, Any]]:
    """``stmt`` as SQL with ``:name`` parameters (IN lists expanded) and their values."""
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


def _pg_plan(url: str, stmt: Any) -> str:
    """PostgreSQL's plan (text) of a SQLAlchemy statement, with its bound parameters."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> str:
        engine = create_async_engine(url)
        compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
        params = tuple(compiled.params[k] for k in compiled.positiontup or ())
        try:
            async with engine.connect() as conn:
                rows = (await conn.exec_driver_sql("EXPLAIN " + str(compiled), params)).scalars().all()
        finally:
            await engine.dispose()
        return "\n".join(rows)

    return asyncio.run(go())


def _captured_statements(url: str, call: Any) -> list[Any]:
    """The statements (with parameters bound) a store method executes, captured on the way
    (through :meth:`Database.read` or the listing reads' :meth:`Database.all`)."""
    from moorage.metadata.db import Database

    seen: list[Any] = []

    async def go() -> None:
        db = Database(url)
        real_read = db.read

        class Spy:
            def __init__(self, conn: Any) -> None:
                self.conn = conn

            async def execute(self, stmt: Any, params: Any = None) -> Any:
                seen.append(stmt.params(**params) if params else stmt)
                return await self.conn.execute(stmt, params) if params else await self.conn.execute(stmt)

        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def read(snapshot: bool = True) -> Any:
            async with real_read(snapshot=snapshot) as conn:
                yield Spy(conn)

        real_all = db.all

        async def all_rows(stmt: Any, params: dict[str, Any]) -> list[Any]:  # the listing reads' fast path
            seen.append(stmt.params(**params) if params else stmt)
            return await real_all(stmt, params)

        db.read = read  # type: ignore[method-assign]
        db.all = all_rows  # type: ignore[method-assign]
        try:
            await call(db)
        finally:
            await db.close()

    asyncio.run(go())
    return seen


def _assert_index_walk(plan: str, table: str, index: str) -> None:
    assert f"Seq Scan on {table}" not in plan, plan
    assert index in plan, plan


@pytest.mark.parametrize("where", ["start", "middle"])
def test_catalog_page_is_an_index_range_scan(big_pg: str, where: str) -> None:
    from moorage.metadata.store import MetadataStore

    last = None if where == "start" else repo_name(BIG // 2, BIG)
    stmts = _captured_statements(big_pg, lambda db: MetadataStore(db).catalog(1000, last))
    assert len(stmts) == 1
    plan = _pg_plan(big_pg, stmts[0])
    _assert_index_walk(plan, "repositories", "ix_repositories_name_c")
    assert "Sort" not in plan, plan  # the index gives the order; nothing is sorted


def _pg_plan_analyzed(url: str, stmt: Any) -> str:
    """``EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)``: the plan with the rows and loops each node
    really had (counts, not times)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> str:
        engine = create_async_engine(url)
        compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
        params = tuple(compiled.params[k] for k in compiled.positiontup or ())
        try:
            async with engine.connect() as conn:
                sql = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + str(compiled)
                rows = (await conn.exec_driver_sql(sql, params)).scalars().all()
        finally:
            await engine.dispose()
        return "\n".join(rows)

    return asyncio.run(go())


def _node(plan: str, what: str) -> tuple[int, int]:
    """(rows per loop, loops) of the first plan node whose line contains ``what``."""
    import re

    line = next(x for x in plan.splitlines() if what in x)
    m = re.search(r"rows=(\d+) loops=(\d+)", line)
    assert m, line
    return int(m.group(1)), int(m.group(2))


def test_catalog_of_a_user_with_ten_namespaces_reads_ten_ranges(big_pg: str) -> None:
    """``catalog_in`` on PostgreSQL: one statement walking the name index once per range (a
    LATERAL over the ranges), reading the ranges' names and nothing else."""
    from moorage.metadata.store import MetadataStore

    prefixes = [repo_name(k * BIG // 10, BIG).split("/")[0] + "/" for k in range(10)]
    found: list[list[str]] = []

    async def call(db: Any) -> None:
        found.append(await MetadataStore(db).catalog_in(1000, None, prefixes, ["big/tags"], public=True))

    stmts = _captured_statements(big_pg, call)
    assert found[0] == sorted(["big/tags"] + [repo_name(k * BIG // 10, BIG) for k in range(10)])
    assert len(stmts) == 1, stmts
    plan = _pg_plan_analyzed(big_pg, stmts[0])
    assert "Seq Scan on repositories" not in plan, plan
    rows, loops = _node(plan, "Index Scan using ix_repositories_name_c")
    assert loops == 11 and rows * loops <= 11, plan  # 10 prefixes + 1 name, one name in each
    assert "ix_repositories_public_name" in plan, plan


@pytest.mark.parametrize("ranges", [1, 10, 150])
def test_catalog_ranges_are_one_statement_whatever_their_number(big_pg: str, ranges: int) -> None:
    """The SQL of ``catalog_in`` on PostgreSQL is the same text for 1, 10 or 150 ranges: it is
    prepared once per connection and planned in a fraction of a millisecond.  (A UNION with a
    branch per range took ~3 ms to plan at 12 ranges, 3/4 of the filtered catalog's time at 1M.)"""
    from moorage.metadata.store import MetadataStore

    def sql(k: int) -> str:
        prefixes = [repo_name(i * BIG // k, BIG).split("/")[0] + "/" for i in range(k)]

        async def call(db: Any) -> None:
            assert len(await MetadataStore(db).catalog_in(1000, None, prefixes, ["big/tags"], public=True)) > 0

        (stmt,) = _captured_statements(big_pg, call)
        from sqlalchemy.dialects import postgresql

        return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"render_postcompile": True}))

    assert sql(ranges) == sql(2)


def test_v2_catalog_of_a_user_with_ten_namespaces_reads_ten_ranges(big_pg: str) -> None:
    """``/v2/_catalog``'s path for a restricted caller (``Authenticator.catalog_scope`` then
    ``RegistryService.catalog``): the page comes from the caller's name ranges -- an index range
    scan each, no walk of the catalog filtered in Python -- and is exactly the filtered one.
    Two statements in all: the public namespaces, then the ranges with each repository's own
    ``public`` flag (the pull filter asks nothing more; it used to ask two more)."""
    from moorage.auth.authenticator import Authenticator
    from moorage.config import Settings
    from moorage.metadata.auth_store import AuthStore
    from moorage.metadata.store import MetadataStore
    from moorage.registry.access_rules import Grant, Principal
    from moorage.registry.service import RegistryService
    from moorage.storage.memory import MemoryBlobStore

    spaces = [repo_name(k * BIG // 10, BIG).split("/")[0] for k in range(10)]
    user = Principal("someone", grants=[Grant(ns + "/*", frozenset({"pull"})) for ns in spaces])
    pages: list[list[str]] = []

    async def call(db: Any) -> None:
        scope = await Authenticator(Settings(), AuthStore(db)).catalog_scope(user)
        assert scope.bounded
        service = RegistryService(MetadataStore(db), MemoryBlobStore())
        pages.append(await service.catalog(1001, None, scope))

    stmts = _captured_statements(big_pg, call)
    assert pages[0] == [repo_name(k * BIG // 10, BIG) for k in range(10)]
    assert len(stmts) == 2, [str(s) for s in stmts]  # public namespaces; one batch of the ranges
    assert "namespaces" in str(stmts[0]) and "repositories" not in str(stmts[0])
    plan = _pg_plan_analyzed(big_pg, stmts[1])
    assert "Seq Scan on repositories" not in plan, plan
    rows, loops = _node(plan, "Index Scan using ix_repositories_name_c")
    assert loops == 12 and rows * loops <= 12, plan  # 10 grants + the user's own name and namespace
    assert "ix_repositories_public_name" in plan, plan


@pytest.mark.parametrize("who", ["anonymous", "owner", "grants", "inner-star", "robot", "owner-token", "grant-token"])
def test_ranged_catalog_on_postgres_lists_exactly_the_filtered_catalog(postgres_url: str, who: str) -> None:
    """tests/test_catalog_scope.py's page-by-page equivalence (ranged read + pull filter ==
    the whole catalog filtered) on PostgreSQL's own statement (the LATERAL over the ranges)."""
    from moorage.auth.authenticator import Authenticator
    from moorage.config import Settings
    from moorage.metadata.auth_store import AuthStore
    from moorage.metadata.db import Database
    from moorage.metadata.store import MetadataStore
    from moorage.registry.service import RegistryService
    from moorage.storage.memory import MemoryBlobStore
    from tests.test_catalog_scope import check_ranged_equals_filtered, populate

    url = create_database(postgres_url, f"scope_{uuid.uuid4().hex[:8]}")
    _migrate(url)

    async def go() -> None:
        await populate(url)
        db = Database(url)
        try:
            service = RegistryService(MetadataStore(db), MemoryBlobStore())
            await check_ranged_equals_filtered(service, Authenticator(Settings(), AuthStore(db)), who)
        finally:
            await db.close()

    asyncio.run(go())


def test_ui_list_of_a_user_with_ten_namespaces_reads_ten_ranges(big_pg: str, tmp_path: Path) -> None:
    """The UI's repository list (page and count) for a viewer with 10 namespace grants and public
    access: index ranges (BitmapOr / MULTI-INDEX OR), never a walk of every name."""
    import sqlite3

    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from moorage.ui.queries import UIQueries, Visibility

    def grants(n: int) -> list[str]:
        return [repo_name(k * n // 10, n).split("/")[0] + "/*" for k in range(10)]

    def statements(url: str, n: int) -> list[Any]:
        async def call(db: Any) -> None:
            ui = UIQueries(db)
            cond = await ui.visible_condition(Visibility(public_ok=True, pull_patterns=grants(n)))
            rows, total = await ui.list_repositories(cond)
            assert total.count == 10 and total.exact and [r.name for r in rows] == [repo_name(k * n // 10, n) for k in range(10)]

        return _captured_statements(url, call)

    # the page (and the count, unless the page holds the end); not the page rows' figures, read
    # by the ids of the rows found (tag count, last push, size: one statement per page)
    stmts = [s for s in statements(big_pg, BIG) if "namespaces" not in str(s) and "FROM repositories" in str(s)]
    stmts = [s for s in stmts if "FROM tags" not in str(s)]
    assert stmts
    for stmt in stmts[:2]:
        plan = _pg_plan(big_pg, stmt)
        assert "Seq Scan on repositories" not in plan and "BitmapOr" in plan, plan
        assert "ix_repositories_public_name" in plan, plan

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, SMALL, 0)
    conn = sqlite3.connect(tmp_path / "moorage.db")
    listing = [s for s in statements(url, SMALL) if "namespaces" not in str(s) and "FROM repositories" in str(s)]
    for stmt in [s for s in listing if "FROM tags" not in str(s)][:2]:
        sql, params = _named_sql(stmt, sqlite_dialect.dialect(paramstyle="named"))
        plan = "\n".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "MULTI-INDEX OR" in plan and "SCAN repositories" not in plan, (sql, plan)
    conn.close()


@pytest.mark.parametrize("sort", ["name", "pushed", "size"])
def test_ui_list_pages_walk_an_index_and_count_at_most_a_cap(big_pg: str, sort: str, tmp_path: Path) -> None:
    """The UI's repository list for an administrator: a deep page (keyset, from the previous
    page's last row) and page 1, sorted by name, last push or size, are walks of one index
    (no Sort, no Seq Scan of the repositories); the count stops at COUNT_CAP (a Limit)."""
    import sqlite3

    from sqlalchemy import true
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from moorage.metadata.db import Database
    from moorage.ui.queries import COUNT_CAP, UIQueries

    index = {"name": "ix_repositories_name_c", "pushed": "ix_ui_repo_stats_push_name", "size": "ix_ui_repo_stats_size_name"}

    def statements(url: str) -> list[Any]:
        async def refresh() -> None:
            db = Database(url)
            try:
                await UIQueries(db).refresh_stats()
            finally:
                await db.close()

        asyncio.run(refresh())
        asyncio.run(run_sql(url, []))  # PostgreSQL: VACUUM ANALYZE, as autovacuum would after the refresh
        cursor: list[str] = []

        async def first(db: Any) -> None:
            ui = UIQueries(db)
            rows, total = await ui.list_repositories(true(), sort=sort, offset=2000, limit=50)
            assert not total.exact and total.count >= COUNT_CAP and total.more and len(rows) == 50
            cursor.append(ui.cursor(rows[-1], sort))

        _captured_statements(url, first)

        async def deep(db: Any) -> None:
            rows, _ = await UIQueries(db).list_repositories(true(), sort=sort, limit=50, after=cursor[0])
            assert len(rows) == 50

        # (PostgreSQL: the listing's SET LOCAL of its plan settings comes first)
        return [s for s in _captured_statements(url, deep) if "set_config" not in str(s)]

    stmts = statements(big_pg)
    at = next(i for i, st in enumerate(stmts) if "count(" in str(st).lower())
    pages, count = stmts[:at], stmts[at]
    assert 1 <= len(pages) <= 2  # (the rows tied with the cursor's key, then those past it)
    for page in pages:
        plan = _pg_plan(big_pg, page)
        assert "Seq Scan on repositories" not in plan and "Sort" not in plan, plan
        assert index[sort] in plan, plan
    assert "Limit" in _pg_plan(big_pg, count)

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, SMALL, 0)
    stmts = statements(url)
    conn = sqlite3.connect(tmp_path / "moorage.db")
    for page in stmts[: next(i for i, st in enumerate(stmts) if "count(" in str(st).lower())]:
        sql, params = _named_sql(page, sqlite_dialect.dialect(paramstyle="named"))
        plan = "\n".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "TEMP B-TREE" not in plan and "SCAN repositories" not in plan, (sql, plan)
    conn.close()


def test_tags_list_page_of_a_repository_with_many_tags_is_an_index_range_scan(big_pg: str) -> None:
    from moorage.metadata.store import MetadataStore

    stmts = _captured_statements(big_pg, lambda db: MetadataStore(db).list_tags("big/tags", 100, "v010000"))
    plan = _pg_plan(big_pg, stmts[0])
    _assert_index_walk(plan, "tags", "ix_tags_repository_name_c")
    assert "Sort" not in plan, plan


def test_sqlite_catalog_and_ranges_walk_the_name_index(tmp_path: Path) -> None:
    """The same on SQLite: no temporary B-tree for ORDER BY, no full scan for the ranges."""
    import sqlite3

    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from moorage.metadata.store import MetadataStore

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, SMALL, 1000)
    prefixes = [repo_name(k * SMALL // 10, SMALL).split("/")[0] + "/" for k in range(10)]

    from moorage.auth.authenticator import Authenticator
    from moorage.config import Settings
    from moorage.metadata.auth_store import AuthStore
    from moorage.registry.access_rules import Grant, Principal
    from moorage.registry.service import RegistryService
    from moorage.storage.memory import MemoryBlobStore

    user = Principal("someone", grants=[Grant(p + "*", frozenset({"pull"})) for p in prefixes])

    async def call(db: Any) -> None:
        store = MetadataStore(db)
        await store.catalog(1000, repo_name(SMALL // 2, SMALL))
        assert len(await store.catalog_in(1000, None, prefixes, public=True)) == 10
        await store.list_tags("big/tags", 100, "v000500")
        # /v2/_catalog's path for a user with 10 namespace grants (scope, then its ranges)
        scope = await Authenticator(Settings(), AuthStore(db)).catalog_scope(user)
        page = await RegistryService(store, MemoryBlobStore()).catalog(1001, None, scope)
        assert page == [repo_name(k * SMALL // 10, SMALL) for k in range(10)]

    conn = sqlite3.connect(tmp_path / "moorage.db")
    for stmt in _captured_statements(url, call):
        if "alembic" in str(stmt):
            continue
        sql, params = _named_sql(stmt, sqlite_dialect.dialect(paramstyle="named"))
        plan = "\n".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        print(sql, plan, sep="\n")
        # full scans of the tables never; sorting only the few rows a union merged
        assert not any(line.strip() in ("SCAN repositories", "SCAN tags") for line in plan.splitlines()), (sql, plan)
        if "UNION" not in sql:
            assert "TEMP B-TREE" not in plan, (sql, plan)
    conn.close()


def test_namespace_scans_walk_the_name_index(big_pg: str, tmp_path: Path) -> None:
    """A namespace's quota usage (asked on every push into a namespace with a quota) and a
    scrub of a namespace find the namespace's repositories as ranges of the name index, on
    both databases: SQLite's ``LIKE 'ns/%'`` is case-insensitive and read every name (270 ms
    per check at 1M repositories)."""
    import sqlite3

    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from moorage.metadata import integrity_store
    from moorage.metadata.policy_store import PolicyStore

    def statements(url: str, n: int) -> list[Any]:
        ns = repo_name(n // 2, n).split("/")[0]

        async def call(db: Any) -> None:
            assert await PolicyStore(db).namespace_usage(ns) > 0
            assert (await integrity_store.count_blobs(db, None, ns, None))[0] == 2
            assert len(await integrity_store.next_blobs(db, None, ns, None, 10)) == 2

        return [st for st in _captured_statements(url, call) if "repositories" in str(st)]

    stmts = statements(big_pg, BIG)
    assert len(stmts) == 3
    for stmt in stmts:
        plan = _pg_plan(big_pg, stmt)
        assert "Seq Scan on repositories" not in plan and "ix_repositories_name_c" in plan, plan

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, SMALL, 0)
    conn = sqlite3.connect(tmp_path / "moorage.db")
    stmts = statements(url, SMALL)
    assert len(stmts) == 3
    for stmt in stmts:
        sql, params = _named_sql(stmt, sqlite_dialect.dialect(paramstyle="named"))
        plan = "\n".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert not any(line.strip().startswith("SCAN repositories") for line in plan.splitlines()), (sql, plan)
    conn.close()


def test_storage_chart_reads_the_kept_figures(big_pg: str, tmp_path: Path) -> None:
    """The storage chart's top repositories come from ``ui_repo_stats`` walked by size (an
    index, a LIMIT), not from summing every repository's links (4.5 s at 1M repositories),
    and give the same figures as that sum after a refresh."""
    from sqlalchemy import true

    from moorage.metadata.db import Database
    from moorage.ui.queries import UIQueries

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, 300, 0)
    asyncio.run(run_sql(url, ["UPDATE blobs SET size = size * 7 WHERE digest = (SELECT min(digest) FROM blobs)"]))

    async def go() -> None:
        db = Database(url)
        try:
            ui = UIQueries(db)
            await ui.refresh_stats()
            got = await ui.storage_by_repository(true(), limit=50)
        finally:
            await db.close()
        assert len(got) == 50 and got == sorted(got, key=lambda r: (-r[1], r[0]))
        assert {size for _, size in got} == {6 * 7 + 5}  # every repository links the seed's 2 blobs

    asyncio.run(go())

    async def refresh() -> None:
        db = Database(big_pg)
        try:
            await UIQueries(db).refresh_stats()
        finally:
            await db.close()

    asyncio.run(refresh())
    asyncio.run(run_sql(big_pg, []))  # VACUUM ANALYZE, as autovacuum would after the refresh
    (stmt,) = _captured_statements(big_pg, lambda db: UIQueries(db).storage_by_repository(true()))
    plan = _pg_plan(big_pg, stmt)
    assert "repository_blobs" not in plan and "Seq Scan on ui_repo_stats" not in plan, plan
    assert "ix_ui_repo_stats_size_name" in plan and "Limit" in plan.splitlines()[0], plan


def test_migration_goes_on_without_pg_trgm_when_the_server_refuses_it(postgres_url: str, caplog: Any) -> None:
    """A role that may create tables but not extensions: migration 0016 logs that pg_trgm is
    not available, once, and completes without the trigram index (search still works)."""
    import logging

    from sqlalchemy import text, true
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from moorage.metadata.db import Database
    from moorage.ui.queries import UIQueries

    name = f"scale_trgm_{uuid.uuid4().hex[:8]}"
    role = f"r_{uuid.uuid4().hex[:8]}"
    admin = create_database(postgres_url, name)

    async def setup() -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'"))
                await conn.execute(text(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC'))
                await conn.execute(text(f"ALTER SCHEMA public OWNER TO {role}"))
        finally:
            await engine.dispose()

    asyncio.run(setup())
    url = make_url(admin).set(username=role, password=f"pw-{role}").render_as_string(hide_password=False)

    async def go() -> tuple[list[str], int]:
        db = Database(url)
        try:
            await db.migrate()
            async with db.read() as conn:
                idx = list(
                    (await conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'repositories'"))).scalars()
                )
            _, total = await UIQueries(db).list_repositories(true(), query="app")
            return idx, total.count
        finally:
            await db.close()

    with caplog.at_level(logging.WARNING, logger="moorage.migrations"):
        indexes, found = asyncio.run(go())
    warned = [r for r in caplog.records if "pg_trgm is not available" in r.getMessage()]
    assert len(warned) == 1, caplog.records
    assert "ix_repositories_name_trgm" not in indexes and "ix_repositories_name_c" in indexes
    assert found == 0


def test_migration_creates_the_trigram_index_when_allowed(big_pg: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> list[str]:
        engine = create_async_engine(big_pg)
        try:
            async with engine.connect() as conn:
                q = "SELECT indexname FROM pg_indexes WHERE tablename IN ('repositories', 'ui_repo_stats')"
                return list((await conn.execute(text(q))).scalars())
        finally:
            await engine.dispose()

    found = asyncio.run(go())
    for index in ("ix_repositories_name_trgm", "ix_ui_repo_stats_push_name", "ix_ui_repo_stats_size_name"):
        assert index in found, found


# ---------------------------------------------------------------------------------- GC memory
def _gc_peak_rss_mib(url: str, data: Path) -> tuple[float, dict[str, Any]]:
    """Peak RSS (MiB, the child's own VmHWM) and summary of ``moorage gc --dry-run --grace 0``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if not url.startswith("sqlite"):
        env["MOORAGE_DATABASE__URL"] = url.replace("postgresql+asyncpg://", "postgresql://")
    data.mkdir(parents=True, exist_ok=True)
    args = ["gc", "--dry-run", "--grace", "0", "--json", "-q", "--data", str(data)]
    code, out, err, peak = run_with_peak_rss(args, env, str(REPO_ROOT))
    assert code == 0, err[-2000:]
    return peak, json.loads(out)


@pytest.mark.parametrize("read", ["clean", "every repository"])
def test_gc_mark_memory_does_not_grow_with_manifests(postgres_url: str, big_pg: str, tmp_path: Path, read: str) -> None:
    """Peak RSS of the dry run, the same at 5,000 and 50,000 manifests.  ``clean``: no policy,
    every repository's image tagged, so the batches skip them all; ``every repository``: a
    retention policy whose rule can touch every repository (``keep_regex`` only), so all of
    them are read and marked, 5,000 at a time -- the mark phase's own memory bound."""
    small = create_database(postgres_url, f"scale_small_{uuid.uuid4().hex[:8]}")
    _build(small, SMALL)
    policy = "INSERT INTO retention_policies (pattern, keep_regex, created_at) VALUES ('*', '.*', 1.7e9)"
    if read != "clean":
        asyncio.run(run_sql(small, [policy]))
        asyncio.run(run_sql(big_pg, [policy]))
    try:
        rss_small, sum_small = _gc_peak_rss_mib(small, tmp_path / "small")
        rss_big, sum_big = _gc_peak_rss_mib(big_pg, tmp_path / "big")
    finally:
        asyncio.run(run_sql(big_pg, ["DELETE FROM retention_policies"]))
    # nothing is garbage in either (every repository's image is tagged; the policy keeps every tag)
    assert sum_small["blobs_removed"] == sum_big["blobs_removed"] == 0, (sum_small, sum_big)
    print(f"gc --dry-run peak RSS ({read}): {rss_small:.0f} MiB at {SMALL:,} manifests, {rss_big:.0f} MiB at {BIG:,}")
    assert rss_big - rss_small < RSS_SLACK_MIB, (
        f"peak RSS {rss_small:.0f} MiB at {SMALL:,} manifests, {rss_big:.0f} MiB at {BIG:,}"
    )


# ---------------------------------------------------------------------------------- retention
def test_retention_ranked_by_the_database_agrees_with_the_planner(tmp_path: Path) -> None:
    """``plan_repository`` (keep_last / expire_days in SQL) removes exactly what ``plan`` does,
    ties in push time and names that sort differently by locale included."""
    import random

    from moorage.gc import retention
    from moorage.metadata.db import Database
    from moorage.metadata.records import RetentionPolicy

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, 10, 0)
    rng = random.Random(24)
    now = 1.7e9 + 100 * 86400
    names = [f"{rng.choice(['v', 'V', 'rc', 'v_', 'é'])}{i}" for i in range(400)]
    rows = [f"('{n}', {1.7e9 + rng.choice([0, 1, 2, 50, 99]) * 86400 + rng.choice([0, 0.5])})" for n in names]
    asyncio.run(
        run_sql(
            url,
            [
                "CREATE TEMP TABLE t (name TEXT, at REAL)",
                "INSERT INTO t VALUES " + ", ".join(rows),
                "INSERT INTO tags (repository_id, name, manifest_id, updated_at) SELECT m.repository_id, t.name, m.id, t.at "
                "FROM t, manifests m WHERE m.repository_id = (SELECT id FROM repositories WHERE name = 'seed/app')",
            ],
        )
    )
    cases = [
        [RetentionPolicy("seed/*", 10)],
        [RetentionPolicy("seed/app", 0)],
        [RetentionPolicy("seed/*", None, None, 30)],
        [RetentionPolicy("seed/*", 57, "v1.*", 60)],
        [RetentionPolicy("*", 5), RetentionPolicy("seed/app", 200, None, 10)],
        [RetentionPolicy("seed/*", 1000)],
        [RetentionPolicy("other/*", 1)],
    ]

    async def go() -> None:
        db = Database(url)
        sizes = []
        try:
            for policies in cases:
                expected = retention.plan(policies, await retention.load_tags(db, "seed/app"), now)
                got = await retention.plan_repository(db, policies, "seed/app", now)
                assert got == expected, policies
                sizes.append(len(expected))
            assert sum(1 for n in sizes if 0 < n < 401) >= 4, sizes  # the cases do remove some, not all
        finally:
            await db.close()

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_retention_over_every_repository_reads_only_what_can_lose_tags(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``retention.plan_all`` (``moorage retention apply`` without ``--repository``) removes
    exactly what :func:`plan` over every tag removes, and reads the tags of no repository where
    no rule can remove anything (a ``keep_last 10`` over one-tag repositories: none; it used to
    load every tag of the registry -- 25 s and 1.1M rows in memory at 1M repositories)."""
    import random

    from moorage.gc import retention
    from moorage.metadata.db import Database
    from moorage.metadata.policy_store import PolicyStore
    from moorage.metadata.records import RetentionPolicy

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_url"), f"ret_{uuid.uuid4().hex[:8]}")
    _build(url, 2000, 3000)  # 2,000 one-tag repositories + big/tags with 3,000 tags
    rng = random.Random(24)
    now = 1.7e9 + 100 * 86400
    few = [repo_name(i, 2000) for i in rng.sample(range(2000), 20)]  # these get 11-15 tags more
    rows = [f"('{r}', 'x{k}', {1.7e9 + rng.choice([0, 1, 50, 99]) * 86400})" for r in few for k in range(rng.randint(11, 15))]
    asyncio.run(
        run_sql(
            url,
            [
                "CREATE TEMP TABLE t (repo TEXT, name TEXT, at REAL)",
                "INSERT INTO t VALUES " + ", ".join(rows),
                "INSERT INTO tags (repository_id, name, manifest_id, updated_at) SELECT m.repository_id, t.name, m.id, t.at "
                "FROM t, repositories r, manifests m WHERE r.name = t.repo AND m.repository_id = r.id",
            ],
        )
    )
    cases = [
        [RetentionPolicy("*", 10)],
        [RetentionPolicy("*", None, None, 30)],
        [RetentionPolicy("ns*", 12, None, 60)],
        [RetentionPolicy("*", 5, "x1.*"), RetentionPolicy("big/*", 2500)],
        [RetentionPolicy("*", None, "x[0-5]")],
        [RetentionPolicy("nomatch/*", 1)],
    ]
    loaded: list[int] = []

    async def go() -> None:
        db = Database(url)
        real = PolicyStore.load_tags_of

        async def spy(self: PolicyStore, ids: Any) -> Any:
            loaded.extend(ids)
            return await real(self, ids)

        PolicyStore.load_tags_of = spy  # type: ignore[method-assign]
        try:
            everything = await retention.load_tags(db, None)
            for i, policies in enumerate(cases):
                loaded.clear()
                expected = retention.plan(policies, everything, now)
                assert await retention.plan_all(db, policies, now) == expected, policies
                if i == 0:  # keep_last 10: only the 20 repositories with more than 10 tags are read
                    assert len(expected) > 3000 and len(set(loaded)) == 20, (len(expected), len(set(loaded)))
        finally:
            PolicyStore.load_tags_of = real  # type: ignore[method-assign]
            await db.close()

    asyncio.run(go())


def test_gc_batches_read_only_repositories_with_something_to_mark(tmp_path: Path) -> None:
    """Without retention the collector's batches leave out the repositories where every
    manifest is tagged and every link's blob is referenced there (the dry run at 100,000
    repositories: 6 s -> under 1 s); one with an untagged manifest or a stray link is read."""
    import hashlib

    from moorage.metadata.db import Database
    from moorage.metadata.gc_store import GCStore

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, 3000, 0)
    stray = "sha256:" + hashlib.sha256(b"stray").hexdigest()
    untagged, linked = repo_name(10, 3000), repo_name(2500, 3000)
    asyncio.run(
        run_sql(
            url,
            [
                f"DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = '{untagged}')",
                f"INSERT INTO blobs (digest, size, created_at, last_linked_at) VALUES ('{stray}', 1, 1.7e9, 1.7e9)",
                "INSERT INTO repository_blobs (repository_id, digest, created_at) "
                f"SELECT id, '{stray}', 1.7e9 FROM repositories WHERE name = '{linked}'",
            ],
        )
    )

    async def go() -> tuple[list[str], int]:
        db = Database(url)
        try:
            gc = GCStore(db)
            seen = [n for snap in [s async for s in gc.index_batches(None, 500, skip_clean=True)] for n in snap.repos.values()]
            every = sum([len(s.repos) async for s in gc.index_batches(None, 500)])
        finally:
            await db.close()
        return seen, every

    seen, every = asyncio.run(go())
    assert sorted(seen) == sorted([untagged, linked]) and every == 3002


def test_gc_batches_read_names_only_of_repositories_with_something_to_mark(tmp_path: Path) -> None:
    """The collector's batch walk reads the repositories' id ranges, not their names: a name is
    read only for a repository the batch will mark (at 10M repositories reading every name to
    drop nearly all of them was 40% of a dry run: 40 -> 25 s on SQLite).  What the dry run
    reports is unchanged: the one untagged manifest, with or without a retention policy."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from moorage.gc.collector import Collector, GCOptions
    from moorage.metadata.db import Database
    from moorage.storage.memory import MemoryBlobStore

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, 3000, 0)
    untagged = repo_name(1234, 3000)
    asyncio.run(run_sql(url, [f"DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = '{untagged}')"]))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    async def run() -> Any:
        db = Database(url)
        try:
            opts = GCOptions(grace=0, dry_run=True, delete_untagged=True, mark_batch=500)
            return await Collector(db, MemoryBlobStore(), opts).run()
        finally:
            await db.close()

    event.listen(Engine, "before_cursor_execute", record)
    try:
        plain = asyncio.run(run())
        # a policy every repository matches but none can shorten (one tag each, keep_last 10)
        asyncio.run(run_sql(url, ["INSERT INTO retention_policies (pattern, keep_last, created_at) VALUES ('ns*', 10, 1.7e9)"]))
        with_policy = asyncio.run(run())
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    names_read = [s for s in statements if s.startswith("SELECT") and "repositories.name" in s]
    assert names_read, "the marked repository's name is read"
    assert all("repositories.id IN" in s for s in names_read), [s for s in names_read if "repositories.id IN" not in s]
    for res in (plain, with_policy):
        assert [m[0] for m in res.manifests] == [untagged] and not res.tags


def test_gc_with_retention_reads_only_repositories_a_rule_can_shorten(tmp_path: Path) -> None:
    """With retention policies the collector's batches still leave out the clean repositories:
    those where no rule can remove a tag (no more tags than ``keep_last``, none older than the
    cutoff) and nothing else is to mark.  The dry run reports exactly what reading every
    repository reports (it used to read all of them: 85 s at 1M repositories on PostgreSQL)."""
    import hashlib

    from moorage.gc.collector import Collector, GCOptions
    from moorage.metadata.db import Database
    from moorage.metadata.gc_store import GCStore
    from moorage.storage.memory import MemoryBlobStore

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, 2000, 0)
    many = [repo_name(i, 2000) for i in (3, 700, 1999)]  # 12 tags each (11 on a second manifest)
    old = repo_name(1200, 2000)  # its one tag is from 2001
    untagged = repo_name(50, 2000)
    dm = "sha256:" + hashlib.sha256(b"second").hexdigest()
    asyncio.run(
        run_sql(
            url,
            [
                "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) "
                f"SELECT id, '{dm}', 'application/vnd.oci.image.manifest.v1+json', 2, X'7b7d', 1.7e9 FROM repositories "
                f"WHERE name IN ('{many[0]}', '{many[1]}', '{many[2]}')",
                "INSERT INTO tags (repository_id, name, manifest_id, updated_at) SELECT m.repository_id, 'v' || k.x, m.id, "
                f"1.7e9 + k.x FROM manifests m, (WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 11) "
                f"SELECT x FROM g) k WHERE m.digest = '{dm}'",
                f"UPDATE tags SET updated_at = 1.0e9 WHERE repository_id = (SELECT id FROM repositories WHERE name = '{old}')",
                f"DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = '{untagged}')",
                "INSERT INTO retention_policies (pattern, keep_last, keep_regex, expire_days, created_at) "
                "VALUES ('ns0*', 10, NULL, NULL, 1.7e9), ('ns9*', 10, NULL, NULL, 1.7e9), ('ns6*', NULL, NULL, 5000, 1.7e9)",
            ],
        )
    )
    read: list[str] = []

    async def run(every: bool) -> Any:
        db = Database(url)
        real = GCStore.index_batches

        def spy(self: GCStore, *args: Any, **kwargs: Any) -> Any:
            if every:
                kwargs["skip_clean"] = False
            gen = real(self, *args, **kwargs)

            async def seen() -> Any:
                async for snap in gen:
                    read.extend(snap.repos.values())
                    yield snap

            return seen()

        GCStore.index_batches = spy  # type: ignore[method-assign]
        try:
            opts = GCOptions(grace=0, dry_run=True, delete_untagged=True, mark_batch=300)
            res = await Collector(db, MemoryBlobStore(), opts).run()
        finally:
            GCStore.index_batches = real  # type: ignore[method-assign]
            await db.close()
        return res

    everything = asyncio.run(run(True))
    assert len(read) == 2002
    read.clear()
    skipping = asyncio.run(run(False))
    # many[1] (ns35000) has 12 tags but no policy matches it; the other ns6* repositories'
    # tags are younger than 5,000 days
    assert sorted(read) == sorted([many[0], many[2], old, untagged]), read
    assert sorted(everything.tags) == sorted(skipping.tags) and len(skipping.tags) == 2 + 2 + 1
    assert sorted(everything.manifests) == sorted(skipping.manifests) and skipping.manifests
    assert everything.blobs == skipping.blobs and everything.links_removed == skipping.links_removed
    assert everything.kept == skipping.kept


# ------------------------------------------------------------------------- mark equivalence
def test_database_side_mark_agrees_with_the_pure_mark(tmp_path: Path) -> None:
    """The collector's bounded-memory mark (batches + database set operations) reports, in a
    ``--delete-untagged`` dry run, exactly what the pure ``mark()`` finds on a whole snapshot:
    untagged manifests nothing reaches, blobs only they (or nothing) reference, stale links."""
    import hashlib

    from moorage.gc.collector import Collector, GCOptions
    from moorage.gc.mark import MarkScope, mark
    from moorage.metadata.db import Database
    from moorage.metadata.gc_store import GCStore
    from moorage.storage.memory import MemoryBlobStore

    url = f"sqlite+aiosqlite:///{tmp_path / 'moorage.db'}"
    _build(url, 30, 0)  # 31 repositories, each a tagged image of two shared blobs

    def d(label: str) -> str:
        return "sha256:" + hashlib.sha256(label.encode()).hexdigest()

    blobs = ", ".join(f"('{d(x)}', 7, 1.7e9, 1.7e9)" for x in ("only-untagged", "free", "shared", "stale-link"))
    untagged = "(SELECT id FROM manifests WHERE digest = '" + d("m-untagged") + "')"
    r0 = "(SELECT id FROM repositories WHERE name = '" + repo_name(0, 30) + "')"
    r1 = "(SELECT id FROM repositories WHERE name = '" + repo_name(1, 30) + "')"
    asyncio.run(
        run_sql(
            url,
            [
                f"INSERT INTO blobs (digest, size, created_at, last_linked_at) VALUES {blobs}",
                "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) "
                f"VALUES ({r0}, '{d('m-untagged')}', 'application/vnd.oci.image.manifest.v1+json', 2, X'7b7d', 1.7e9)",
                f"INSERT INTO manifest_blobs (manifest_id, digest) VALUES ({untagged}, '{d('only-untagged')}'), "
                f"({untagged}, '{d('shared')}')",
                "INSERT INTO manifest_blobs (manifest_id, digest) SELECT id, '" + d("shared") + "' FROM manifests "
                f"WHERE repository_id = {r1}",
                f"INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ({r0}, '{d('only-untagged')}', 1.7e9), "
                f"({r0}, '{d('shared')}', 1.7e9), ({r1}, '{d('shared')}', 1.7e9), ({r0}, '{d('stale-link')}', 1.7e9)",
            ],
        )
    )

    async def go() -> None:
        db = Database(url)
        try:
            opts = GCOptions(grace=0, dry_run=True, delete_untagged=True, mark_batch=7)
            res = await Collector(db, MemoryBlobStore(), opts).run()
            snap = await GCStore(db).snapshot()
            pure = mark(snap, MarkScope(now=__import__("time").time(), grace=0, delete_untagged=True))
        finally:
            await db.close()
        assert [m for _, m, _ in res.manifests] == [m.digest for m in pure.manifests] == [d("m-untagged")]
        assert res.blobs == pure.blobs
        assert {b for b, _ in res.blobs} == {d("only-untagged"), d("free"), d("stale-link")}
        assert res.links_removed == len(pure.links) == 1  # r0's link to "shared" (r1's manifest keeps the blob)

    asyncio.run(go())
