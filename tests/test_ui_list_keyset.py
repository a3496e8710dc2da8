"""The UI's repository list at scale (issue 24): keyset pages and a capped count.

``list_repositories(after=/before=)`` walks the list by the last/first row's key instead of an
OFFSET; the walk must give exactly the rows the OFFSET pages give, in the same order, forwards
and backwards, for every sort (ties in size and last push included, broken by name).  The total
stops counting at ``COUNT_CAP`` ("1,000+"), exact below it; a malformed cursor is the first page.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import true

from moorage.metadata.db import Database
from moorage.ui.queries import COUNT_CAP, UIQueries, Visibility
from tests.support.scale import clone_sql, run_sql, seed_sql

pytestmark = pytest.mark.unit

N = 1100  # more than COUNT_CAP
PAGE = 50


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    import asyncio

    path = tmp_path_factory.mktemp("keyset") / "m.db"
    url = f"sqlite+aiosqlite:///{path}"

    async def build() -> None:
        db = Database(url)
        await db.migrate()
        await db.close()
        await run_sql(url, seed_sql(True) + clone_sql(N, 0, True))
        db = Database(url)
        try:
            await UIQueries(db).refresh_stats()
        finally:
            await db.close()
        # ties: 7 sizes, 13 push times (and one repository without figures: sorts last)
        await run_sql(
            url,
            [
                "UPDATE ui_repo_stats SET size = repository_id % 7, last_push = 1.7e9 + (repository_id % 13) * 0.5",
                "DELETE FROM ui_repo_stats WHERE repository_id = (SELECT id FROM repositories WHERE name = 'big/tags')",
            ],
        )

    asyncio.run(build())
    return url


async def _offset_walk(ui: UIQueries, cond: Any, sort: str, query: str = "") -> list[str]:
    rows, _ = await ui.list_repositories(cond, sort=sort, query=query, limit=10_000)
    return [r.name for r in rows]


@pytest.mark.parametrize("sort", ["name", "pushed", "size"])
@pytest.mark.parametrize("restricted", [False, True])
async def test_keyset_walk_equals_the_offset_pages(db_url: str, sort: str, restricted: bool) -> None:
    db = Database(db_url)
    ui = UIQueries(db)
    try:
        cond = await ui.visible_condition(Visibility(public_ok=False, pull_patterns=["ns0*", "ns5*", "big/tags"]))
        if not restricted:
            cond = true()
        expected = await _offset_walk(ui, cond, sort)
        assert len(expected) > 3 * PAGE
        forward: list[str] = []
        pages: list[list[Any]] = []
        after = None
        while True:
            rows, total = await ui.list_repositories(cond, sort=sort, limit=PAGE, after=after)
            forward += [r.name for r in rows]
            pages.append(rows)
            if not total.more:
                break
            after = ui.cursor(rows[-1], sort)
        assert forward == expected
        assert all(len(p) == PAGE for p in pages[:-1])
        # backwards from the last page, by each page's first row
        back: list[str] = [r.name for r in pages[-1]]
        before = ui.cursor(pages[-1][0], sort)
        for _ in range(len(pages) - 1):
            rows, total = await ui.list_repositories(cond, sort=sort, limit=PAGE, before=before)
            assert total.more  # the page we came from follows
            back = [r.name for r in rows] + back
            before = ui.cursor(rows[0], sort)
        assert back == expected
    finally:
        await db.close()


async def test_count_is_capped_and_exact_below_the_cap(db_url: str) -> None:
    db = Database(db_url)
    ui = UIQueries(db)
    try:
        _, total = await ui.list_repositories(true())
        assert (total.count, total.exact, total.label) == (COUNT_CAP, False, f"{COUNT_CAP:,}+")
        _, total = await ui.list_repositories(true(), query="r000001")  # r0000010 .. r0000019
        assert (total.count, total.exact, total.label) == (10, True, "10")
        assert not total.more
    finally:
        await db.close()


@pytest.mark.parametrize("sort", ["name", "pushed", "size"])
@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "x" * 301,
        "nan:ns",
        "inf:ns",
        "1.0:",
        "notanumber:x",
        ":",
        "1e400:a",
        "1e300:a",
        "-1:a",
        "1.5:a",
        "9223372036854775808:a",
        "\x00",
        "1.0:' OR 1=1 --",
    ],
)
async def test_a_malformed_cursor_is_a_page_never_an_error(db_url: str, sort: str, cursor: str) -> None:
    db = Database(db_url)
    ui = UIQueries(db)
    try:
        first, _ = await ui.list_repositories(true(), sort=sort, limit=PAGE)
        rows, _ = await ui.list_repositories(true(), sort=sort, limit=PAGE, after=cursor)
        rows2, _ = await ui.list_repositories(true(), sort=sort, limit=PAGE, before=cursor)
        assert len(rows) <= PAGE and len(rows2) <= PAGE
        not_keys = {"", "x" * 301, "\x00"}
        if sort != "name":
            not_keys |= {"nan:ns", "inf:ns", "1.0:", "notanumber:x", ":", "1e400:a"}
        if sort == "size":
            not_keys |= {"1e300:a", "-1:a", "1.5:a", "9223372036854775808:a"}
        if cursor in not_keys:
            assert rows == rows2 == first  # not a key: the first page, either way
    finally:
        await db.close()
