"""Which schema revision the code needs and which one a SQLite file holds, without SQLAlchemy
or Alembic (standard library only).

Starting a server or a command on a database that is already current is the common case; it
should cost one query, not the import of the migration machinery (Alembic, Mako, Pygments:
a third of a command's start-up time and ~5 MiB of a server's memory).  :mod:`.db` runs the
migrations when they are needed; ``moorage serve`` asks :func:`sqlite_revision` first to decide
whether to migrate in a separate process.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations"

_REVISION_LINE = re.compile(r"""^(down_revision|revision)[ \t]*(?::[^=\n]*)?=[ \t]*(.*?)[ \t]*(?:#.*)?$""", re.M)
_QUOTED = re.compile(r"""^(?:"([^"]*)"|'([^']*)')$""")


class SchemaOutOfDate(RuntimeError):
    """The database's schema is older (or newer) than this code."""


@functools.lru_cache(maxsize=1)
def script_head() -> str | None:
    """The newest migration's revision, read from the version files' ``revision`` and
    ``down_revision`` lines.

    None when the files are anything but one simple chain (a merge, a branch, an unusual
    line): then Alembic itself decides.  tests/test_footprint.py keeps this equal to Alembic's head.
    """
    parents: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found: dict[str, str | None] = {}
        for key, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            quoted = _QUOTED.match(value)
            if value == "None":
                found[key] = None
            elif quoted:
                found[key] = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
            else:
                return None
        revision = found.get("revision")
        if revision is None or "down_revision" not in found or revision in parents:
            return None
        parents[revision] = found["down_revision"]
    heads = set(parents) - {p for p in parents.values() if p is not None}
    roots = [r for r, p in parents.items() if p is None]
    if len(heads) != 1 or len(roots) != 1 or any(p is not None and p not in parents for p in parents.values()):
        return None
    return heads.pop()


def sqlite_revision(target: str, *, uri: bool = False) -> str | None:
    """The revision stamped in the SQLite database ``target`` (a path, or a ``file:`` URI);
    None if it has no schema yet (or no file).  Opened read-only; creates nothing.

    Raises :class:`sqlite3.Error` if the file cannot be read or holds several revisions.
    """
    if not uri:
        if not Path(target).is_file():
            return None
        target = f"file:{target}?mode=ro"
    conn = sqlite3.connect(target, uri=True, timeout=10)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone() is None:
            return None
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        conn.close()
    if len(rows) > 1:
        raise sqlite3.DatabaseError(f"alembic_version holds {len(rows)} revisions")
    return str(rows[0][0]) if rows else None
