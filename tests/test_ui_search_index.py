"""SQLite's trigram index for the UI's search-as-you-type (issue 24, migration 0017).

The index (``repositories_fts``, FTS5 ``trigram``) only names candidates; the search keeps its
``LIKE``, so it must give exactly what the plain ``LIKE`` path gives -- for any name and any
term (case, ``%``/``_``/``\\``, quotes, NUL, odd Unicode), checked with hypothesis against the
path without the index.  A rare term must not walk the name index; the triggers must keep the
index equal to the table under concurrent creates and deletes; the migration must index an
existing database.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import true
from sqlalchemy.dialects import sqlite as sqlite_dialect

from moorage.metadata.db import Database
from moorage.ui.queries import UIQueries
from moorage.ui.search_index import CANDIDATES as FTS_CANDIDATES
from tests.support.scale import clone_sql, run_sql, seed_sql
from tests.test_scale import _captured_statements, _named_sql

pytestmark = pytest.mark.unit

N = 5000  # more than FTS_CANDIDATES
assert FTS_CANDIDATES < N


def _build(path: Path, n: int = N) -> str:
    url = f"sqlite+aiosqlite:///{path}"

    async def go() -> None:
        db = Database(url)
        await db.migrate()
        await db.close()
        await run_sql(url, seed_sql(True) + clone_sql(n, 0, True))

    asyncio.run(go())
    return url


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fts") / "m.db"
    _build(path)
    return path


def _plans(path: Path, stmts: list[Any]) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        out = []
        for stmt in stmts:
            sql, params = _named_sql(stmt, sqlite_dialect.dialect(paramstyle="named"))
            out.append((sql, "\n".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))))
        return out
    finally:
        conn.close()


def _full_scans(plan: str) -> list[str]:
    """Plan lines reading every row of ``repositories`` (by table or by the name index)."""
    return [line.strip() for line in plan.splitlines() if re.match(r"SCAN repositories( |$)", line.strip())]


@pytest.mark.parametrize("sort", ["name", "pushed", "size"])
def test_a_rare_term_reads_its_few_candidates_not_every_name(big: Path, sort: str) -> None:
    """Page and count of a term naming 10 repositories: rowid lookups of the index's candidates
    (the old plan walked the whole name index testing the LIKE on each name)."""
    found: list[Any] = []

    async def call(db: Any) -> None:
        rows, total = await UIQueries(db).list_repositories(true(), query="r000123", sort=sort)
        found.extend(r.name for r in rows)
        assert total.exact and total.count == 10

    stmts = [s for s in _captured_statements(f"sqlite+aiosqlite:///{big}", call) if "sqlite_master" not in str(s)]
    assert len(found) == 10 and all("r000123" in n for n in found)
    assert any("repositories_fts" in str(s) for s in stmts), [str(s) for s in stmts]
    for sql, plan in _plans(big, [s for s in stmts if "FROM repositories" in str(s)]):
        assert not _full_scans(plan), (sql, plan)


def test_a_common_term_counts_from_the_index(big: Path) -> None:
    """A term in every name: the page walks the name index (it fills at once), and the count
    of up to 1,001 matches is driven by the index's rows, not by a walk of the names."""

    async def call(db: Any) -> None:
        rows, total = await UIQueries(db).list_repositories(true(), query="r00", limit=10)
        assert len(rows) == 10 and not total.exact

    stmts = _captured_statements(f"sqlite+aiosqlite:///{big}", call)
    counts = [s for s in stmts if str(s).lower().startswith("select count(")]
    assert counts
    for sql, plan in _plans(big, counts):
        assert "repositories_fts" in sql and not _full_scans(plan), (sql, plan)
        # the index's matches drive the join (no list of all of them made first)
        assert plan.index("SCAN repositories_fts VIRTUAL TABLE") < plan.index("SEARCH repositories USING INTEGER PRIMARY KEY"), (
            plan
        )
        assert "LIST SUBQUERY" not in plan, plan


def test_a_restricted_viewers_common_term_reads_their_ranges(big: Path) -> None:
    """A viewer with three namespaces searching a term in every name: page and count read
    their three name ranges, not the index's million matches."""
    from moorage.ui.queries import Visibility

    async def call(db: Any) -> None:
        ui = UIQueries(db)
        cond = await ui.visible_condition(Visibility(public_ok=False, pull_patterns=["ns00000/*", "ns00020/*", "ns00040/*"]))
        rows, total = await ui.list_repositories(cond, query="r00")
        assert [r.name for r in rows] == ["ns00000/r0000000", "ns00020/r0000001", "ns00040/r0000002"] and total.exact

    stmts = [s for s in _captured_statements(f"sqlite+aiosqlite:///{big}", call) if "FROM repositories" in str(s)]
    for sql, plan in _plans(big, stmts):
        assert not _full_scans(plan) and "repositories_fts JOIN" not in sql, (sql, plan)


# -- the same rows as the plain LIKE ----------------------------------------------------------
_ALPHABET = st.sampled_from(list("abcxyz019._-/%\\\"'AZ") + ["ä", "İ", "ı", "K", "\u212a", "\u0301", "\u202e", "ß", "\x00", "😀"])
_NAMES = st.lists(st.text(_ALPHABET, min_size=1, max_size=12), min_size=1, max_size=25, unique=True)
_TERMS = st.text(_ALPHABET, min_size=0, max_size=8)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build(tmp_path_factory.mktemp("fts-h") / "m.db", 0)


async def _both(url: str, names: list[str], terms: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(term, rows with the index, rows without) for ``names`` written through the triggers."""
    from sqlalchemy import text

    db = Database(url)
    try:
        async with db.write() as conn:
            await conn.execute(
                text("DELETE FROM manifests WHERE repository_id <> (SELECT id FROM repositories WHERE name = 'seed/app')")
            )
            await conn.execute(text("DELETE FROM repositories WHERE name <> 'seed/app'"))
            for name in names:
                rid = (
                    await conn.execute(
                        text("INSERT INTO repositories (name, public, created_at) VALUES (:n, 0, 1) RETURNING id"), {"n": name}
                    )
                ).scalar_one()
                await conn.execute(
                    text(
                        "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) "
                        "VALUES (:r, 'sha256:x', 'm', 1, X'00', 1)"
                    ),
                    {"r": rid},
                )
        indexed, plain = UIQueries(db), UIQueries(db)
        plain.search.enabled = False
        out = []
        for term in terms:
            a, ta = await indexed.list_repositories(true(), query=term, limit=100)
            b, tb = await plain.list_repositories(true(), query=term, limit=100)
            assert ta == tb, (term, ta, tb)
            out.append((term, [r.name for r in a], [r.name for r in b]))
        return out
    finally:
        await db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_NAMES, terms=st.lists(_TERMS, min_size=1, max_size=6))
def test_search_with_the_index_equals_the_plain_like(scratch: str, names: list[str], terms: list[str]) -> None:
    # terms taken from the names too: most random terms match nothing
    picked = [n[i : i + k] for n in names[:3] for i, k in ((0, 3), (1, 4), (2, 5), (0, 1), (1, 2)) if len(n) > i]
    for term, with_index, plain in asyncio.run(_both(scratch, names, terms + picked)):
        assert with_index == plain, (term, names)


def test_hostile_terms_are_a_result_never_an_error(scratch: str) -> None:
    names = ["a%b/c_d", "x\\y/z", 'q"uote/x', "ns/\u202eevil", "caf\u00e9/e\u0301", "big/" + "a" * 200]
    terms = [
        "%",
        "_",
        "\\",
        "%%%",
        "___",
        '"',
        '""',
        "\x00",
        "a\x00b",
        "\u202e",
        "e\u0301",
        "A" * 5000,
        "*",
        "NEAR(a b)",
        "a OR b",
        "^ab",
    ]
    for term, with_index, plain in asyncio.run(_both(scratch, names, terms)):
        assert with_index == plain, term


# -- the triggers under concurrent writes -------------------------------------------------------
def grams_match_names(path: Path) -> None:
    """Every name's grams are in the table and the table holds nothing else."""
    conn = sqlite3.connect(path)
    try:
        want = set(
            conn.execute(
                "SELECT substr(lower(r.name) || char(1), p.i, 2), r.id FROM repositories r "
                "JOIN name_gram_positions p ON p.i <= length(r.name)"
            )
        )
        have = set(conn.execute("SELECT gram, repository_id FROM repository_name_grams"))
        assert have == want, (len(have - want), len(want - have))
    finally:
        conn.close()


def _index_matches_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO repositories_fts (repositories_fts, rank) VALUES ('integrity-check', 1)")
        table = {r[0] for r in conn.execute("SELECT id FROM repositories")}
        indexed = {
            r[0]
            for r in conn.execute('SELECT rowid FROM repositories_fts WHERE repositories_fts MATCH \'"r00" OR "seed" OR "new"\'')
        }
        assert indexed <= table
    finally:
        conn.close()
    grams_match_names(path)


def test_concurrent_creates_and_deletes_keep_the_index_exact(tmp_path: Path) -> None:
    """Pushes (new repositories) and repository deletes race with searches: every search
    equals the plain LIKE on its own snapshot's rows, and the index equals the table after."""
    from moorage.metadata.gc_store import GCStore
    from moorage.metadata.store import MetadataStore

    path = tmp_path / "m.db"
    url = _build(path, 300)

    async def go() -> None:
        db = Database(url)
        store, gc = MetadataStore(db), GCStore(db)
        indexed, plain = UIQueries(db), UIQueries(db)
        plain.search.enabled = False
        stop = asyncio.Event()

        async def push(k: int) -> None:
            for i in range(40):
                await store.put_manifest(
                    f"new{k}/r{i:04d}",
                    f"sha256:{k:02d}{i:062d}",
                    "application/vnd.oci.image.manifest.v1+json",
                    b"{}",
                    blob_digests=[],
                    child_digests=[],
                    subject=None,
                    artifact_type=None,
                    annotations=None,
                    tag="t",
                    verify_references=False,
                )

        async def remove() -> None:
            for i in range(0, 300, 3):
                await gc.delete_repository(f"ns{i * 100_000 // 300:05d}/r{i:07d}")

        async def search() -> int:
            n = 0
            while not stop.is_set():
                for term in ("new1/r00", "r00001", "new", "/r000"):
                    await indexed.list_repositories(true(), query=term, limit=500)
                    n += 1
                await asyncio.sleep(0)
            return n

        searcher = asyncio.create_task(search())
        await asyncio.gather(push(1), push(2), remove())
        stop.set()
        assert await searcher > 0
        for term in ("new1/r00", "r00001", "new", "/r000", "r0000", "ns0", "new2/r0039"):
            a, ta = await indexed.list_repositories(true(), query=term, limit=1000)
            b, tb = await plain.list_repositories(true(), query=term, limit=1000)
            assert [r.name for r in a] == [r.name for r in b] and ta == tb, term
        a, _ = await indexed.list_repositories(true(), query="new2/r0039")
        assert [r.name for r in a] == ["new2/r0039"]
        a, _ = await indexed.list_repositories(true(), query="r0000003")
        assert a == []  # deleted
        await db.close()

    asyncio.run(go())
    _index_matches_table(path)


def migrate_reporting(url: str) -> tuple[str | None, str | None]:
    """Migrate ``url``: (revision before, revision after)."""

    async def go() -> tuple[str | None, str | None]:
        db = Database(url)
        try:
            return await db.migrate()
        finally:
            await db.close()

    return asyncio.run(go())


def test_migration_indexes_an_existing_database(tmp_path: Path) -> None:
    """A database at 0016 with repositories: migrating to 0017 builds the index of them all."""
    path = tmp_path / "m.db"
    url = _build(path, 500)
    conn = sqlite3.connect(path)
    for stmt in (
        "DROP TRIGGER IF EXISTS repositories_fts_ai",
        "DROP TRIGGER IF EXISTS repositories_fts_ad",
        "DROP TRIGGER IF EXISTS repositories_fts_au",
        "DROP TABLE IF EXISTS repositories_fts",
        "UPDATE alembic_version SET version_num = '0016'",
        "INSERT INTO repositories (name, public, created_at) VALUES ('after/the-fact', 0, 1)",
    ):
        conn.execute(stmt)
    conn.commit()
    conn.close()

    before, after = migrate_reporting(url)
    assert before == "0016" and after is not None and after != "0016"
    conn = sqlite3.connect(path)
    try:
        hits = conn.execute("SELECT rowid FROM repositories_fts WHERE repositories_fts MATCH '\"r000049\"'").fetchall()
        assert len(hits) == 10
        late = conn.execute("SELECT rowid FROM repositories_fts WHERE repositories_fts MATCH '\"the-fact\"'").fetchall()
        assert late == conn.execute("SELECT id FROM repositories WHERE name = 'after/the-fact'").fetchall()
    finally:
        conn.close()
    _index_matches_table(path)
