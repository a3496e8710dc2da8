"""The auth listings of a SQLite registry read through the standard library's ``sqlite3``, for
the read-only commands (``moorage user list``, ``token list``, ``namespace list``).

Why a second way to read the same rows: SQLAlchemy alone takes ~0.3 s to import, more than
the whole budget of a quick command (under 0.3 s).  These queries are the ones
:class:`~moorage.metadata.auth_store.AuthStore` runs for the same listings, written out, and
return the same records; tests/test_sqlite_reads.py runs both on one database (odd Unicode
names, robots, admins, scoped/expired/revoked tokens) so the two cannot drift apart.

Only a database already at the code's schema revision is read here (:func:`open_current`);
anything else -- PostgreSQL, a schema to migrate or from a newer Moorage, a file SQLite cannot
read -- returns None and the caller takes the SQLAlchemy path, which migrates or says what is
wrong exactly as before.  The connection is read-only: a listing never writes, and never
creates a file.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .records import TokenRecord, UserRecord
from .schema_version import script_head

#: The wait for a lock, as the server's reads on the event loop (``db.ON_LOOP_BUSY_MS``): under
#: WAL a reader never waits for writers; only crash recovery can make it.
_BUSY_SECONDS = 2.0


def sqlite_file(database_url: str) -> str | None:
    """The file of a ``sqlite+aiosqlite:///PATH`` URL (as ``Settings.database_url`` gives it);
    None for any other database, an in-memory one, or a URL with options."""
    prefix = "sqlite+aiosqlite:///"
    if not database_url.startswith(prefix):
        return None
    path = database_url[len(prefix) :]
    if not path or path == ":memory:" or "?" in path or path.startswith("file:"):
        return None
    return path


def open_current(database_url: str) -> sqlite3.Connection | None:
    """A read-only connection to the SQLite database of ``database_url`` if its schema is the
    one this code needs; None otherwise (the caller then goes through :mod:`.db`)."""
    path = sqlite_file(database_url)
    head = script_head()
    if path is None or head is None:
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=_BUSY_SECONDS, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        # One snapshot for the revision check and every listing read after it.
        conn.execute("BEGIN")
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        conn.close()
        return None
    if len(rows) != 1 or rows[0][0] != head:
        conn.close()
        return None
    return conn


class SQLiteAuthReader:
    """The listing methods of :class:`~moorage.metadata.auth_store.AuthStore`, synchronous, on
    one read-only snapshot (:func:`open_current`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def list_users(self) -> list[UserRecord]:
        rows = self._rows(
            "SELECT id, name, password_hash, is_admin, is_robot, created_at, password_changed_at, source FROM users ORDER BY name"
        )
        return [UserRecord(int(i), n, ph, bool(a), bool(r), float(c), float(pc), src) for i, n, ph, a, r, c, pc, src in rows]

    def list_grants(self, user: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT users.name, grants.pattern, grants.actions FROM grants JOIN users ON users.id = grants.user_id"
        params: tuple[Any, ...] = ()
        if user is not None:
            sql += " WHERE users.name = ?"
            params = (user,)
        rows = self._rows(sql + " ORDER BY users.name, grants.pattern", params)
        return [{"user": n, "pattern": p, "actions": a.split(",")} for n, p, a in rows]

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        sql = (
            "SELECT access_tokens.id, users.name, access_tokens.user_id, access_tokens.name, access_tokens.secret_hash,"
            " access_tokens.scope, access_tokens.expires_at, access_tokens.revoked_at, access_tokens.last_used_at,"
            " access_tokens.created_at, access_tokens.parent_id FROM access_tokens JOIN users ON users.id = access_tokens.user_id"
        )
        params: tuple[Any, ...] = ()
        if user is not None:
            sql += " WHERE users.name = ?"
            params = (user,)
        rows = self._rows(sql + " ORDER BY access_tokens.created_at", params)
        return [
            TokenRecord(tid, un, int(uid), name, sh, json.loads(scope) if scope else None, exp, rev, used, float(created), parent)
            for tid, un, uid, name, sh, scope, exp, rev, used, created, parent in rows
        ]

    def list_namespaces(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT name, public, created_at FROM namespaces ORDER BY name")
        return [{"name": n, "public": bool(p), "created_at": c} for n, p, c in rows]
