"""Search-as-you-type's first keystrokes: terms of one or two characters (issue 24, migration 0018).

No trigram holds them, so before 0018 a rare one (``q``, ``zq``) read every name: 52-88 ms at 1M
repositories.  The gram index names their candidates; the listing keeps its ``LIKE``.  Checked
here: a rare short term reads its few candidates (plans, both databases), a common one counts
from the index (SQLite) or walks without touching it (PostgreSQL, where a GIN scan of a gram in
every name cannot stop early), the grams mean exactly "the name contains the term" for any
characters, the triggers keep the table equal to the names, and the migration indexes an
existing database.  ``test_ui_search_index.py``'s hypothesis test compares every term of up to
eight characters -- short ones included -- with the plain ``LIKE`` path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text, true

from moorage.metadata.db import Database
from moorage.ui.queries import UIQueries
from moorage.ui.search_index import CANDIDATES, like_escape, sqlite_gram_condition
from tests.support.postgres import create_database
from tests.test_scale import _build, _captured_statements, _migrate, _named_sql, _pg_plan
from tests.test_ui_search_index import _full_scans, _plans, grams_match_names, migrate_reporting

pytestmark = pytest.mark.unit

N = 25_000  # PostgreSQL's gram path needs GRAM_MIN_ROWS (20,000) rows and statistics
#: Rare names: ``q``, ``zq``, ``zz`` are in nothing else (the cloned names are ns00000/r0000000).
RARE = ["team-zq/app", "team-zq/web", "q", "zz", "a/q", "x/qq-1", "k.zz/y"]


def _expected(names: list[str], term: str) -> list[str]:
    return sorted(n for n in names if term in n)


def _add_rare(url: str) -> None:
    async def go() -> None:
        db = Database(url)
        try:
            async with db.write() as conn:
                seed = (await conn.execute(text("SELECT min(id) FROM manifests"))).scalar_one()
                for name in RARE:
                    rid = (
                        await conn.execute(
                            text("INSERT INTO repositories (name, public, created_at) VALUES (:n, :p, 1) RETURNING id"),
                            {"n": name, "p": False},
                        )
                    ).scalar_one()
                    await conn.execute(
                        text(
                            "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) "
                            "SELECT :r, digest, media_type, size, payload, 1 FROM manifests WHERE id = :m"
                        ),
                        {"r": rid, "m": seed},
                    )
            if not db.is_sqlite:
                async with db.write() as conn:
                    await conn.execute(text("ANALYZE repositories"))  # the statistics autovacuum keeps
        finally:
            await db.close()

    asyncio.run(go())


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgres":
        url = create_database(request.getfixturevalue("postgres_url"), f"short_{uuid.uuid4().hex[:8]}")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('short') / 'moorage.db'}"
    _build(url, N)
    _add_rare(url)
    return url


def _search(url: str, term: str, **kw: Any) -> tuple[list[str], Any, list[Any]]:
    found: list[str] = []
    totals: list[Any] = []

    async def call(db: Any) -> None:
        rows, total = await UIQueries(db).list_repositories(true(), query=term, **kw)
        found.extend(r.name for r in rows)
        totals.append(total)

    stmts = _captured_statements(url, call)
    return found, totals[0], stmts


def _listing_statements(stmts: list[Any]) -> list[Any]:
    return [s for s in stmts if "FROM repositories" in str(s) and "pg_class" not in str(s)]


@pytest.mark.parametrize("sort", ["name", "pushed", "size"])
@pytest.mark.parametrize("term", ["q", "zq", "zz", "Q"])
def test_a_rare_short_term_reads_its_candidates_not_every_name(db_url: str, term: str, sort: str) -> None:
    found, total, stmts = _search(db_url, term, sort=sort)
    want = _expected(RARE, term.lower())
    assert sorted(found) == want and total.exact and total.count == len(want), (found, total)
    if sort == "name":
        assert found == want
    sql = " ".join(str(s) for s in stmts)
    assert ("repository_name_grams" in sql) if db_url.startswith("sqlite") else ("moorage_name_grams" in sql), sql
    listing = _listing_statements(stmts)
    assert len(listing) >= 2, [str(s) for s in stmts]
    if db_url.startswith("sqlite"):
        for q, plan in _plans(Path(db_url.split("///", 1)[1]), listing):
            assert not _full_scans(plan), (q, plan)
    else:
        for s in listing:
            plan = _pg_plan(db_url, s)
            # the candidates from the gram index: no walk of the name index, no scan of the table
            assert "Seq Scan on repositories" not in plan and "ix_repositories_name_c" not in plan, plan
            assert "Seq Scan on manifests" not in plan, plan
            if "moorage_name_grams" in str(s):
                assert "Bitmap Index Scan on ix_repositories_name_grams" in plan, plan


def test_the_postgres_probe_reads_the_gram_index(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's probe")
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> str:
        engine = create_async_engine(db_url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
                q = "EXPLAIN SELECT id FROM repositories WHERE moorage_name_grams(name) @> ARRAY[CAST('zq' AS text)] LIMIT 2001"
                return "\n".join((await conn.execute(text(q))).scalars())
        finally:
            await engine.dispose()

    plan = asyncio.run(go())
    assert "ix_repositories_name_grams" in plan, plan


@pytest.mark.parametrize("term", ["r", "0", "/r", "00"])
def test_a_common_short_term_walks_and_counts_without_reading_every_name(db_url: str, term: str) -> None:
    """A term in most names: the page fills from the name walk at once.  SQLite counts its
    first 1,001 matches from the gram table; PostgreSQL does not read its GIN posting list
    (the planner's statistics say it is common) and counts by the walk, which stops at 1,001."""
    found, total, stmts = _search(db_url, term, limit=10)
    assert len(found) == 10 and all(term in n for n in found) and not total.exact
    sql = " ".join(str(s) for s in stmts)
    if db_url.startswith("sqlite"):
        counts = [s for s in stmts if str(s).lower().startswith("select count(")]
        assert counts and all("repository_name_grams" in str(s) for s in counts), sql
        for q, plan in _plans(Path(db_url.split("///", 1)[1]), counts):
            assert not _full_scans(plan) and "LIST SUBQUERY" not in plan, (q, plan)
            assert plan.index("repository_name_grams") < plan.index("SEARCH repositories USING INTEGER PRIMARY KEY"), plan
    else:
        assert "moorage_name_grams" not in sql, sql


def test_more_than_the_candidate_cap_is_common(db_url: str) -> None:
    """``/r`` is in every cloned name (over :data:`CANDIDATES`): the listing is still right."""
    assert N > CANDIDATES
    found, total, _ = _search(db_url, "/r", limit=5)
    assert found == [f"ns{(x * 100_000) // N:05d}/r{x:07d}" for x in range(5)] and total.count >= 1000 and not total.exact


# -- what a gram means, for any characters ------------------------------------------------------
_ALPHABET = st.sampled_from(list("abqz09._-/%\\'AQ") + ["ä", "Ä", "İ", "ı", "\u212a", "\u0301", "ß", "\x01", "😀", "\ud7ff"])


@pytest.fixture(scope="module")
def pg_scratch(request: pytest.FixtureRequest) -> str:
    url = create_database(request.getfixturevalue("postgres_url"), f"grams_{uuid.uuid4().hex[:8]}")
    _migrate(url)
    return url


@pytest.mark.services
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(_ALPHABET, min_size=1, max_size=10), min_size=1, max_size=20), data=st.data())
def test_postgres_grams_are_exactly_the_short_substrings(pg_scratch: str, names: list[str], data: Any) -> None:
    """``moorage_name_grams(name) @> ARRAY[t]`` holds exactly when ``t in name`` (one or two
    characters, case as stored: PostgreSQL's LIKE is case-sensitive)."""
    terms = {n[i : i + k] for n in names for i in range(len(n)) for k in (1, 2) if len(n[i : i + k]) == k}
    terms |= set(data.draw(st.lists(st.text(_ALPHABET, min_size=1, max_size=2), max_size=8)))
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> None:
        engine = create_async_engine(pg_scratch)
        try:
            async with engine.connect() as conn:
                for term in sorted(terms):
                    q = text(
                        "SELECT n FROM unnest(CAST(:names AS text[])) n WHERE moorage_name_grams(n) @> ARRAY[CAST(:t AS text)]"
                    )
                    got = sorted((await conn.execute(q, {"names": names, "t": term})).scalars())
                    assert got == sorted(n for n in names if term in n), (term, names)
        finally:
            await engine.dispose()

    asyncio.run(go())


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.text(_ALPHABET, min_size=1, max_size=10), min_size=1, max_size=20), data=st.data())
def test_sqlite_grams_name_every_match_of_the_like(names: list[str], data: Any) -> None:
    """SQLite: the names whose grams match :func:`sqlite_gram_condition` hold every name the
    ``LIKE`` matches (ASCII case folded) -- the index may name more, never fewer."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    conn = sqlite3.connect(":memory:")
    try:
        for stmt in _migration_sqlite():
            conn.execute(stmt)
        for i, name in enumerate(dict.fromkeys(names)):
            conn.execute("INSERT INTO repositories (id, name) VALUES (?, ?)", (i + 1, name))
        terms = {n[i : i + k].lower() for n in names for i in range(len(n)) for k in (1, 2)}
        terms |= {t.lower() for t in data.draw(st.lists(st.text(_ALPHABET, min_size=1, max_size=2), max_size=8))}
        for term in sorted(t for t in terms if 0 < len(t) <= 2 and "\x00" not in t):
            sql, params = _named_sql(sqlite_gram_condition(term), sqlite_dialect.dialect(paramstyle="named"))
            ids = {r[0] for r in conn.execute(f"SELECT repository_id FROM repository_name_grams WHERE {sql}", params)}
            like = "%" + like_escape(term) + "%"
            matched = {r[0] for r in conn.execute("SELECT id FROM repositories WHERE name LIKE ? ESCAPE '\\'", (like,))}
            assert matched <= ids, (term, names)
    finally:
        conn.close()


def _migration_sqlite() -> list[str]:
    import importlib

    mod = importlib.import_module("moorage.metadata.migrations.versions.0018_short_search_grams")
    return ["CREATE TABLE repositories (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)", *mod._SQLITE]


# -- the migration ----------------------------------------------------------------------------
def test_migration_indexes_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    url = f"sqlite+aiosqlite:///{path}"
    _build(url, 300)
    conn = sqlite3.connect(path)
    for stmt in (
        "DROP TRIGGER repository_name_grams_ai",
        "DROP TRIGGER repository_name_grams_ad",
        "DROP TRIGGER repository_name_grams_au",
        "DROP TABLE repository_name_grams",
        "DROP TABLE name_gram_positions",
        "UPDATE alembic_version SET version_num = '0017'",
        "INSERT INTO repositories (name, public, created_at) VALUES ('late/zq', 0, 1)",
    ):
        conn.execute(stmt)
    conn.commit()
    conn.close()

    before, after = migrate_reporting(url)
    assert before == "0017" and after not in (None, "0017")
    grams_match_names(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM repository_name_grams WHERE gram = 'zq'").fetchone() == (1,)
    finally:
        conn.close()


# -- one pooled connection, many terms ------------------------------------------------------------
def test_postgres_listings_never_run_a_generic_plan(db_url: str) -> None:
    """The page's SQL is the same for every term (``LIKE $1``): after five runs on one pooled
    connection PostgreSQL may switch its prepared statement to a generic plan, chosen for no
    term -- for ``r`` (every name) a bitmap scan of the whole trigram index.  The listing asks
    for custom plans: with the server set to generic plans, ``pg_prepared_statements`` of that
    connection counts no generic one."""
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's plan cache")
    from contextlib import asynccontextmanager

    counted: list[tuple[str, int, int]] = []
    name = db_url.rsplit("/", 1)[1]

    async def server_default(value: str) -> None:
        # what PostgreSQL's own choice comes to at 1M repositories, made certain here
        admin = Database(db_url)
        try:
            async with admin.write() as conn:
                await conn.execute(text(f'ALTER DATABASE "{name}" SET plan_cache_mode = {value}'))
        finally:
            await admin.close()

    async def go() -> None:
        await server_default("force_generic_plan")
        db = Database(db_url)
        real_read = db.read

        @asynccontextmanager
        async def read(snapshot: bool = True) -> Any:
            async with real_read(snapshot=snapshot) as conn:
                yield conn
                q = text(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%LIKE $%' AND statement NOT LIKE '%count(%'"
                )
                counted[:] = [(str(r[0]), int(r[1]), int(r[2])) for r in await conn.execute(q)]

        db.read = read  # type: ignore[method-assign]
        try:
            ui = UIQueries(db)
            for term in ("r000123", "r000456", "ns00012", "r0001", "r000789", "r002", "r0000", "r", "r00"):
                rows, _ = await ui.list_repositories(true(), query=term)
                assert rows and all(term in r.name for r in rows)
        finally:
            await db.close()
            await server_default("DEFAULT")

    asyncio.run(go())
    assert counted, "no prepared listing statement seen"
    assert sum(c for _, _, c in counted) >= 3 and all(g == 0 for _, g, _ in counted), counted


@pytest.mark.parametrize("sort", ["name", "pushed", "size"])
def test_a_rare_terms_first_page_counts_with_its_rows(db_url: str, sort: str) -> None:
    """A first page shorter than the matches: the count read with the page's rows (a window
    count over the candidates) equals the plain path's count, and so do the rows."""

    async def go() -> None:
        db = Database(db_url)
        try:
            indexed, plain = UIQueries(db), UIQueries(db)
            plain.search.enabled = False
            shorter = 0
            for term in ("q", "zq", "team-", "r000123", "/r00001"):
                for limit in (1, 2, 3):
                    a, ta = await indexed.list_repositories(true(), query=term, limit=limit, sort=sort)
                    b, tb = await plain.list_repositories(true(), query=term, limit=limit, sort=sort)
                    assert [r.name for r in a] == [r.name for r in b] and ta == tb, (term, limit, ta, tb)
                    shorter += ta.more
            assert shorter >= 10  # pages shorter than their matches
        finally:
            await db.close()

    asyncio.run(go())
