"""The UI at scale on SQLite and PostgreSQL (issue 24): bounded statements, checked by plan.

* the repository list counts a repository's tags up to a cap (``1,000+``): a page showing a
  repository of 20,000 tags reads at most 1,001 of them, not all;
* the repository page's tags come by keyset (``after=``/``before=``): the same rows as the
  OFFSET pages, ties in push time included, from a walk of ``ix_tags_updated``;
* the namespace filter is a skip scan of the name index: one probe per namespace, never a
  grouping of every name -- and the same namespaces as that grouping.

No timing is asserted; each registry is built by cloning rows in SQL (tests/support/scale.py).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import true
from sqlalchemy.dialects import sqlite as sqlite_dialect

from moorage.metadata.db import Database
from moorage.ui.queries import TAG_COUNT_CAP, UIQueries
from tests.support.postgres import create_database
from tests.support.scale import run_sql
from tests.test_scale import _build, _captured_statements, _named_sql, _pg_plan

N = 20_000
TAGS = 20_000
#: Odd names for the namespace walk: a top-level name, '.' before '/', '0' after it, a
#: repository without a manifest (not listed), deep paths.
ODD = ["a.b/c", "a/b", "a/b/c", "a0/x", "top", "top0", "zz/y/z", "empty/x"]


def _ties_and_odd_names(url: str) -> None:
    big = "(SELECT id FROM repositories WHERE name = 'big/tags')"
    seed_manifest = "(SELECT min(id) FROM manifests)"
    stmts = [
        # ties of three in push time (v000000..v000002 share one, ...)
        f"UPDATE tags SET updated_at = updated_at - (CAST(substr(name, 2) AS INTEGER) % 3) "
        f"WHERE repository_id = {big} AND name LIKE 'v%'",
        *(
            f"INSERT INTO repositories (name, public, created_at) VALUES ('{n}', {'0' if url.startswith('sqlite') else 'false'}, 1)"
            for n in ODD
        ),
        *(
            f"INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) SELECT r.id, m.digest, "
            f"m.media_type, m.size, m.payload, 1 FROM repositories r, manifests m WHERE r.name = '{n}' AND m.id = {seed_manifest}"
            for n in ODD
            if n != "empty/x"
        ),
    ]
    asyncio.run(run_sql(url, stmts))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgres":
        url = create_database(request.getfixturevalue("postgres_url"), f"uiscale_{uuid.uuid4().hex[:8]}")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('uiscale') / 'moorage.db'}"
    _build(url, N, TAGS)
    _ties_and_odd_names(url)
    return url


def _plan(url: str, stmt: Any) -> str:
    if not url.startswith("sqlite"):
        return _pg_plan(url, stmt)
    sql, params = _named_sql(stmt, sqlite_dialect.dialect(paramstyle="named"))
    conn = sqlite3.connect(url.split("///", 1)[1])
    try:
        return "\n".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        conn.close()


def _run(url: str, call: Any) -> Any:
    async def go() -> Any:
        db = Database(url)
        try:
            return await call(UIQueries(db))
        finally:
            await db.close()

    return asyncio.run(go())


def test_the_list_counts_a_repositorys_tags_up_to_a_cap(db_url: str) -> None:
    async def call(db: Any) -> None:
        rows, _ = await UIQueries(db).list_repositories(true(), namespace="big")
        assert [(r.name, r.tags, r.tags_more) for r in rows] == [("big/tags", TAG_COUNT_CAP, True)]
        rows, _ = await UIQueries(db).list_repositories(true(), query="r0000001")
        assert [(r.tags, r.tags_more) for r in rows] == [(1, False)]

    stmts = [s for s in _captured_statements(db_url, call) if "updated_at" in str(s)]
    assert stmts
    for stmt in stmts:
        plan = _plan(db_url, stmt)
        assert "Seq Scan on tags" not in plan and "SCAN tags" not in plan.replace("SCAN tags USING", ""), plan
        if not db_url.startswith("sqlite"):
            assert "Limit" in plan, plan


@pytest.mark.parametrize("query", ["", "v0001"])
def test_tag_pages_by_key_are_the_offset_pages(db_url: str, query: str) -> None:
    """Forward by ``after=`` and back by ``before=``: exactly the OFFSET pages, in order."""
    page = 700 if not query else 7

    async def call(ui: UIQueries) -> None:
        rid = (await ui.repository("big/tags"))["id"]  # type: ignore[index]
        expected, total = await ui.tags_page(rid, query=query, limit=TAGS + 10)
        assert total == len(expected) and len(expected) > 3 * page
        names = [r.tag for r in expected]
        forward: list[list[str]] = []
        rows, _ = await ui.tags_page(rid, query=query, limit=page)
        while rows:
            forward.append([r.tag for r in rows])
            rows, _ = await ui.tags_page(rid, query=query, limit=page, after=ui.tag_cursor(rows[-1]))
        assert [n for p in forward for n in p] == names
        assert all(len(p) == page for p in forward[:-1])
        # back from the last page
        rows, _ = await ui.tags_page(rid, query=query, limit=page, after=ui.tag_cursor(expected[-page - 1]))
        back = [r.tag for r in rows]
        while True:
            rows, _ = await ui.tags_page(rid, query=query, limit=page, before=ui.tag_cursor(rows[0]))
            if not rows:
                break
            back = [r.tag for r in rows] + back
        assert back == names
        # a tampered key is the first page, never an error
        for bad in ("x", "nan:v1", "inf:v1", "1e400:v", ":v", "1.0:", "1.0:" + "v" * 400, "\x00", "1:v\x00"):
            first, _ = await ui.tags_page(rid, query=query, limit=page, after=bad)
            assert [r.tag for r in first] == names[:page], bad

    _run(db_url, call)


def test_a_deep_tag_page_walks_the_push_time_index(db_url: str) -> None:
    keys: list[str] = []

    async def first(ui: UIQueries) -> None:
        rid = (await ui.repository("big/tags"))["id"]  # type: ignore[index]
        rows, _ = await ui.tags_page(rid, offset=TAGS // 2, limit=100)
        keys.append(ui.tag_cursor(rows[-1]))

    _run(db_url, first)

    async def deep(db: Any) -> None:
        ui = UIQueries(db)
        rid = (await ui.repository("big/tags"))["id"]  # type: ignore[index]
        rows, total = await ui.tags_page(rid, after=keys[0], limit=100)
        assert len(rows) == 100 and total == TAGS + 1

    stmts = [s for s in _captured_statements(db_url, deep) if "updated_at" in str(s) and "count(" not in str(s).lower()]
    assert 1 <= len(stmts) <= 2
    for stmt in stmts:
        plan = _plan(db_url, stmt)
        # a walk of (repository, push time); sorted only the tags tied at one push time
        assert "ix_tags_updated" in plan and "Seq Scan on tags" not in plan, plan
        if "USE TEMP B-TREE FOR ORDER BY" in plan:
            assert "updated_at=?" in plan, plan
        if re.search(r"(^|-> +)Sort +\(", plan, re.M):  # a full Sort node (not an Incremental one)
            assert "updated_at = " in plan, plan


def test_the_namespace_filter_is_a_skip_scan_with_the_groupings_result(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from moorage.metadata.tables import repositories
    from moorage.ui import queries as ui_queries

    async def call(db: Any) -> None:
        await UIQueries(db).namespaces_of(true())

    stmts = _captured_statements(db_url, call)
    assert len(stmts) == 1
    plan = _plan(db_url, stmts[0])
    if db_url.startswith("sqlite"):
        assert "SCAN repositories" not in plan and "GROUP BY" not in plan, plan
    else:
        assert "Seq Scan on repositories" not in plan and "Aggregate" not in plan, plan

    async def both(ui: UIQueries) -> tuple[list[str], list[str]]:
        walk = await ui.namespaces_of(true(), limit=100_000)
        grouped = await ui.namespaces_of(repositories.c.id > 0, limit=100_000)  # the restricted path
        return walk, grouped

    monkeypatch.setattr(ui_queries, "NAMESPACE_PROBES", 100_000)  # every namespace, to compare
    walk, grouped = _run(db_url, both)
    assert walk == sorted(grouped)
    assert {"a", "a.b", "a0", "zz", "big", "seed"} <= set(walk) and "top" not in walk and "empty" not in walk


def test_the_namespace_filter_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More namespaces than probes: the walk stops (the first ones, sorted), it does not read on."""
    from moorage.ui import queries as ui_queries

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    _build(url, 3000, 0)
    monkeypatch.setattr(ui_queries, "NAMESPACE_PROBES", 100)
    names = _run(url, lambda ui: ui.namespaces_of(true(), limit=10_000))
    assert len(names) == 100 and names == sorted(names)


# -- retention of a repository with many tags ----------------------------------------------------
def test_retention_plan_in_batches_is_the_planners_and_walks_the_index(db_url: str) -> None:
    """``plan_repository_batches``: batches of a few hundred tags, each continuing from the last
    one's key, together exactly what ``plan`` removes (ties of three in push time included);
    each batch is a walk of ``ix_tags_updated`` from its key, not a sort of every tag."""
    from moorage.gc import retention
    from moorage.metadata.records import RetentionPolicy

    now = 1.6e9 + TAGS  # pushed at 1.6e9 + x: "expire 1 day" keeps the last 86,400 s: none here
    cases = [
        [RetentionPolicy("big/*", 10)],
        [RetentionPolicy("big/*", TAGS - 1500)],
        [RetentionPolicy("big/*", None, None, 0.1)],
        [RetentionPolicy("big/*", 100, "v0000[0-4].*", None)],
        [RetentionPolicy("*", 5), RetentionPolicy("big/tags", 300, None, 0.05)],
    ]

    async def go(ui: UIQueries) -> None:
        db = ui.db
        everything = await retention.load_tags(db, "big/tags")
        for policies in cases:
            expected = retention.plan(policies, everything, now)
            parts = [p async for p in retention.plan_repository_batches(db, policies, "big/tags", now, batch=997)]
            assert [t for p in parts for t in p] == expected, policies
            assert all(len(p) <= 997 for p in parts)
            assert await retention.plan_repository(db, policies, "big/tags", now) == expected
        assert len(retention.plan(cases[0], everything, now)) == TAGS + 1 - 10

    _run(db_url, go)

    async def second_batch(db: Any) -> None:
        batches = retention.plan_repository_batches(db, cases[0], "big/tags", now, batch=500)
        await anext(batches)
        await anext(batches)
        await batches.aclose()

    stmts = [s for s in _captured_statements(db_url, second_batch) if "updated_at" in str(s) and "OFFSET" not in str(s).upper()]
    assert stmts
    for stmt in stmts:
        plan = _plan(db_url, stmt)
        assert "ix_tags_updated" in plan and "Seq Scan on tags" not in plan, plan
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan and not re.search(r"(^|-> +)Sort +\(", plan, re.M), plan
