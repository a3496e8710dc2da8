"""The standard-library SQLite listings (moorage/metadata/sqlite_reads.py) return exactly what
the SQLAlchemy store returns for the same database, and the CLI prints the same either way.

The database is filled through :class:`AuthStore` (the code the server and the CLI write with)
with what an attacker or a careless admin might leave there: odd Unicode names (combining
marks, right-to-left text, emoji, an embedded NUL, names differing only in case), robots
without a password, admins, grants with many actions, tokens scoped, unscoped, expired,
revoked and used, namespaces public and private.  If someone changes a query or a record
type on one side only, these comparisons fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from moorage.cli import main
from moorage.metadata import sqlite_reads
from moorage.metadata.auth_store import AuthStore
from moorage.metadata.db import Database
from moorage.metadata.sqlite_reads import SQLiteAuthReader, open_current, sqlite_file

pytestmark = pytest.mark.unit

ODD_NAMES = [
    "alice",
    "Alice",  # differs only in case: byte order puts it first
    "zoë",
    "zoe\u0308",  # the same name with a combining diaeresis: another row
    "עברית",
    "👩\u200d💻-dev",
    "nul\x00byte",
    "a" * 64,
    "robot-ci",
    "",
]


def _fill(url: str) -> None:
    async def go() -> None:
        db = Database(url, pool_size=1)
        try:
            await db.migrate()
            store = AuthStore(db)
            for i, name in enumerate(ODD_NAMES):
                await store.create_user(
                    name,
                    None if name.startswith("robot") else f"$2b$04$hash{i}",
                    admin=i % 3 == 0,
                    robot=name.startswith("robot"),
                )
            await store.grant("alice", "team/*", ["pull", "push", "delete", "admin"])
            await store.grant("alice", "*", ["pull"])
            await store.grant("zoë", "ünï/cödé/*", ["pull"])
            await store.grant("👩\u200d💻-dev", "👩/*", ["push", "pull"])
            await store.grant("robot-ci", "ci/app", ["push"])
            now = time.time()
            specs: list[tuple[str, str, list[str] | None, float | None]] = [
                ("alice", "laptop", None, None),
                ("alice", "ci", ["team/*:pull", "x:push"], now + 3600),
                ("robot-ci", "deploy", ["ci/app:push"], now - 10),  # expired
                ("zoë", "ünïcode tökén", [], None),  # empty scope list
                ("nul\x00byte", "t", None, None),
            ]
            for n, (user, label, scope, expires) in enumerate(specs):
                await store.create_token(user, label, scope, expires, token_id=f"tok{n:02d}", secret_hash=f"h{n}")
            await store.revoke_token("tok01")
            await store.touch_token("tok00")
            for name, public in (("team", True), ("ünï", False), ("z", True)):
                await store.create_namespace(name, public)
        finally:
            await db.close()

    asyncio.run(go())


def _store_listings(url: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        db = Database(url, pool_size=1)
        try:
            store = AuthStore(db)
            return {
                "users": await store.list_users(),
                "grants": await store.list_grants(),
                "grants_of_alice": await store.list_grants("alice"),
                "tokens": await store.list_tokens(),
                "tokens_of_robot": await store.list_tokens("robot-ci"),
                "tokens_of_nobody": await store.list_tokens("nobody"),
                "namespaces": await store.list_namespaces(),
            }
        finally:
            await db.close()

    return asyncio.run(go())


def _reader_listings(url: str) -> dict[str, Any]:
    conn = open_current(url)
    assert conn is not None
    reader = SQLiteAuthReader(conn)
    try:
        return {
            "users": reader.list_users(),
            "grants": reader.list_grants(),
            "grants_of_alice": reader.list_grants("alice"),
            "tokens": reader.list_tokens(),
            "tokens_of_robot": reader.list_tokens("robot-ci"),
            "tokens_of_nobody": reader.list_tokens("nobody"),
            "namespaces": reader.list_namespaces(),
        }
    finally:
        reader.close()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("reads") / "data"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'moorage.db'}"
    _fill(url)
    return data, url


def test_reader_returns_what_the_store_returns(filled: tuple[Path, str]) -> None:
    _, url = filled
    expected = _store_listings(url)
    got = _reader_listings(url)
    assert got == expected
    # The comparison is not vacuous: every odd row is there, with its types.
    assert [u.name for u in got["users"]] == sorted(ODD_NAMES, key=lambda n: n.encode())
    assert {type(u.is_admin) for u in got["users"]} == {bool} and any(
        u.is_robot and u.password_hash is None for u in got["users"]
    )
    assert len(got["tokens"]) == 5 and got["tokens_of_nobody"] == []
    assert {t.id: (t.scope, t.revoked_at is not None, t.last_used_at is not None) for t in got["tokens"]}["tok01"][:2] == (
        ["team/*:pull", "x:push"],
        True,
    )
    assert [t.scope for t in got["tokens"] if t.id == "tok03"] == [[]]  # an empty scope list stays a list
    assert got["namespaces"][1] == {"name": "z", "public": True, "created_at": got["namespaces"][1]["created_at"]}


def _cli(data: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k.startswith("MOORAGE_")}
    result = CliRunner(env={k: None for k in env}).invoke(main, [*args, "--data", str(data)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


LISTINGS = [("user", "list"), ("user", "list", "--json"), ("token", "list"), ("token", "list", "--json"), ("namespace", "list")]


@pytest.mark.parametrize("args", LISTINGS, ids=" ".join)
def test_cli_prints_the_same_on_both_paths(
    filled: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    data, _ = filled
    used: list[bool] = []
    real = sqlite_reads.open_current

    def spy(url: str) -> Any:
        conn = real(url)
        used.append(conn is not None)
        return conn

    monkeypatch.setattr(sqlite_reads, "open_current", spy)
    fast = _cli(data, *args)
    monkeypatch.setattr(sqlite_reads, "open_current", lambda url: used.append(False))
    slow = _cli(data, *args)
    assert used == [True, False]
    assert fast == slow and fast.strip()
    if "--json" in args:
        assert json.loads(fast)


def test_only_a_current_sqlite_file_is_read_here(tmp_path: Path, filled: tuple[Path, str]) -> None:
    _, url = filled
    assert sqlite_file(url) is not None
    for other in (
        "postgresql+asyncpg://u:p@h/db",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite://",
        f"{url}?mode=ro",
        "sqlite+aiosqlite:///file:x.db",
    ):
        assert sqlite_file(other) is None and open_current(other) is None, other
    # No file: nothing is created.
    missing = tmp_path / "none.db"
    assert open_current(f"sqlite+aiosqlite:///{missing}") is None and not missing.exists()
    # Not a database at all.
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 100)
    assert open_current(f"sqlite+aiosqlite:///{junk}") is None
    # Another schema revision (older or newer): the SQLAlchemy path migrates or refuses.
    import shutil
    import sqlite3

    copy = tmp_path / "old.db"
    shutil.copy(sqlite_file(url) or "", copy)
    conn = sqlite3.connect(copy)
    conn.execute("UPDATE alembic_version SET version_num = '0001'")
    conn.commit()
    conn.close()
    assert open_current(f"sqlite+aiosqlite:///{copy}") is None


def test_reader_never_writes(filled: tuple[Path, str]) -> None:
    _, url = filled
    conn = open_current(url)
    assert conn is not None
    try:
        with pytest.raises(Exception, match="readonly"):
            conn.execute("DELETE FROM users")
    finally:
        conn.close()


def test_a_failed_fast_read_falls_back_to_the_store(filled: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that fails on the stdlib path (a lock held past its timeout ...) is retried through
    the store, which reports a lasting failure as before; the listing is the same."""
    import sqlite3

    data, _ = filled
    expected = _cli(data, "user", "list", "--json")
    calls: list[str] = []

    def locked(self: SQLiteAuthReader) -> list[Any]:
        calls.append("fast")
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteAuthReader, "list_users", locked)
    assert _cli(data, "user", "list", "--json") == expected and calls == ["fast"]
