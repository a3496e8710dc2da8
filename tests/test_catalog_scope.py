"""``/v2/_catalog`` for a restricted caller reads the caller's name ranges (issue 24), and lists
exactly what filtering the whole catalog lists.

``Authenticator.catalog_scope`` gives the pull filter plus the index ranges holding everything it
can keep (the account's grants and own namespace, public namespaces, public repositories);
``RegistryService.catalog`` reads only those ranges.  The ranges are a superset by construction,
so the page is the same -- checked here page by page (n = 1, 2, 3, 7, 1000, every ``last``) against
the old path (the same filter over the whole catalog) for owners, grants of every pattern shape,
robots, scoped tokens, administrators and anonymous callers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moorage.auth.authenticator import Authenticator
from moorage.config import Settings
from moorage.metadata.auth_store import AuthStore
from moorage.metadata.db import Database
from moorage.metadata.store import MetadataStore
from moorage.registry.access_rules import Grant, Principal, pull_ranges
from moorage.registry.catalog_scope import CatalogScope
from moorage.registry.service import RegistryService
from moorage.storage.memory import MemoryBlobStore
from tests.support.scale import clone_sql, repo_name, run_sql, seed_sql

pytestmark = pytest.mark.unit

PULL = frozenset({"pull"})
#: Repositories made before the clone (so each gets the seed's manifest), and after (none).
LISTED = [
    "alice", "alice/x", "alice/y/z", "alice-b", "alicex/y", "team/a/app", "team/b/lib", "teams/c",
    "pub/deep/x", "pub/y", "pubx/z", "solo", "zz/app",
]  # fmt: skip
EMPTY = ["alice/empty", "team/empty", "pub/empty"]
#: A cloned repository marked public.
PUBLIC = repo_name(5, 40)


def _principals() -> dict[str, Principal]:
    g = Grant
    return {
        "anonymous": Principal(None),
        "owner": Principal("alice"),
        "grants": Principal("bob", grants=[g("team/*", PULL), g("ns0*", frozenset({"push"})), g("alicex/y", PULL)]),
        "inner-star": Principal("dave", grants=[g("team/*/app", PULL), g("ns00000/*", frozenset({"admin"}))]),
        "leading-star": Principal("carol", grants=[g("*/app", PULL)]),
        "robot": Principal("alice", is_robot=True, grants=[g("team/*", frozenset({"admin"}))]),
        "owner-token": Principal("alice", token_scope=[g("alice/x", PULL)]),
        "grant-token": Principal("bob", grants=[g("team/*", PULL)], token_scope=[g("team/a/*", PULL)]),
        "push-token": Principal("alice", token_scope=[g("alice/*", frozenset({"push"}))]),
        "admin": Principal("root", is_admin=True),
        "admin-token": Principal("root", is_admin=True, token_scope=[g("team/*", PULL)]),
    }


async def populate(url: str) -> None:
    """The repositories above (plus 40 clones, a public one among them, and public namespaces)
    in the migrated database ``url`` (SQLite or PostgreSQL: test_scale.py runs these on both)."""
    sqlite = url.startswith("sqlite")
    true, false = ("1", "0") if sqlite else ("true", "false")
    made = ", ".join(f"('{n}', {false}, 1.7e9)" for n in LISTED)
    empty = ", ".join(f"('{n}', {false}, 1.7e9)" for n in EMPTY)
    await run_sql(
        url,
        seed_sql(sqlite)
        + [f"INSERT INTO repositories (name, public, created_at) VALUES {made}"]
        + clone_sql(40, 0, sqlite)
        + [
            f"INSERT INTO repositories (name, public, created_at) VALUES {empty}",
            f"UPDATE repositories SET public = {true} WHERE name IN ('solo', '{PUBLIC}', 'team/empty')",
            f"INSERT INTO namespaces (name, public, created_at) VALUES ('pub', {true}, 1.7e9), ('zz', {false}, 1.7e9)",
        ],
    )


@pytest.fixture
async def registry(tmp_path: Path) -> tuple[RegistryService, Authenticator, Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    db = Database(url)
    await db.migrate()
    await populate(url)
    yield RegistryService(MetadataStore(db), MemoryBlobStore()), Authenticator(Settings(), AuthStore(db)), db
    await db.close()


async def _walk(service: RegistryService, n: int, scope: CatalogScope | object) -> list[str]:
    pages: list[str] = []
    last = None
    while True:
        page = await service.catalog(n + 1, last, scope)  # type: ignore[arg-type]
        pages += page[:n]
        if len(page) <= n:
            return pages
        last = page[n - 1]


async def check_ranged_equals_filtered(service: RegistryService, auth: Authenticator, who: str) -> None:
    """Page by page, the ranged catalog of ``who`` is the whole catalog filtered."""
    principal = _principals()[who]
    scope = await auth.catalog_scope(principal)
    assert scope.bounded == (who not in ("admin", "admin-token", "leading-star")), scope
    everything = await _walk(service, 1000, scope.keep)  # the old path: the whole catalog, filtered
    for n in (1, 2, 3, 7, 1000):
        assert await _walk(service, n, scope) == everything, (who, n)
    expected = {
        "anonymous": [PUBLIC, "pub/deep/x", "pub/y", "solo"],
        "owner": ["alice", "alice/x", "alice/y/z", PUBLIC, "pub/deep/x", "pub/y", "solo"],
        "owner-token": ["alice/x", PUBLIC, "pub/deep/x", "pub/y", "solo"],
        "grant-token": [PUBLIC, "pub/deep/x", "pub/y", "solo", "team/a/app"],
    }
    if who in expected:
        assert everything == expected[who]


@pytest.mark.parametrize("who", sorted(_principals()))
async def test_ranged_catalog_lists_exactly_the_filtered_catalog(registry: tuple, who: str) -> None:
    service, auth, _ = registry
    await check_ranged_equals_filtered(service, auth, who)


async def test_ranges_read_only_what_the_caller_may_hold(registry: tuple) -> None:
    """The statements read the caller's ranges: a user with ``team/*`` never sees the
    ``ns…`` names go past (counted by the rows the store hands back)."""
    service, auth, _ = registry
    seen: list[str] = []
    real = service.store.catalog_in_rows

    async def spy(*args: object, **kwargs: object) -> list[tuple[str, bool]]:
        got = await real(*args, **kwargs)  # type: ignore[arg-type]
        seen.extend(name for name, _ in got)
        return got

    service.store.catalog_in_rows = spy  # type: ignore[method-assign]
    scope = await auth.catalog_scope(_principals()["grants"])
    assert await service.catalog(1000, None, scope) == [
        "alicex/y", PUBLIC, "pub/deep/x", "pub/y", "solo", "team/a/app", "team/b/lib",
    ]  # fmt: skip
    assert seen and not [n for n in seen if n.startswith("ns") and n != PUBLIC], seen


def test_pull_ranges() -> None:
    p = _principals()
    assert pull_ranges(p["anonymous"]) == ([], [])
    assert pull_ranges(p["owner"]) == (["alice/"], ["alice"])
    assert pull_ranges(p["grants"]) == (["bob/", "team/"], ["alicex/y", "bob"])  # push-only ns0* gives nothing
    assert pull_ranges(p["inner-star"]) == (["dave/", "ns00000/", "team/"], ["dave"])
    assert pull_ranges(p["robot"]) == (["team/"], [])  # a robot owns no namespace
    assert pull_ranges(p["leading-star"]) is None
    assert pull_ranges(p["admin"]) is None


async def test_exact_names_branch_gives_the_first_names_in_order(registry: tuple) -> None:
    """``catalog_in``'s single-name branch is ordered before its LIMIT: with more names than
    ``n`` it must give the first ``n`` in name order, not any ``n`` of them."""
    service, _, _ = registry
    names = [repo_name(i, 40) for i in range(40)]
    for n in (1, 3, 10):
        assert await service.store.catalog_in(n, None, (), names[::-1]) == names[:n]
        assert await service.store.catalog_in(n, names[5], (), names[::-1]) == names[6 : 6 + n]


def test_catalog_ranges_are_merged_disjoint_byte_ranges() -> None:
    """PostgreSQL's ranged read walks each range once: prefixes inside prefixes, names inside
    prefixes and duplicates merge; a name is the range holding it alone; byte order (``é`` is
    after ``z``), and a prefix without an upper bound gives up (the UNION path then)."""
    from moorage.metadata.store import catalog_ranges

    assert catalog_ranges(["a/", "a/b/", "a/"], ["a/x", "b", "b"]) == [("a/", "a0"), ("b", "b\x01")]
    assert catalog_ranges(["é/", "z/"], ["a"]) == [("a", "a\x01"), ("z/", "z0"), ("é/", "é0")]
    assert catalog_ranges(["ab", "a"], []) == [("a", "b")]
    assert catalog_ranges([], []) == []
    assert catalog_ranges(["\U0010ffff"], []) is None
