"""Search-as-you-type on SQLite by a trigram index (issue 24).

The UI's filter is a substring match (``name LIKE '%q%'``); a B-tree cannot serve it, so on
SQLite a rare match read every name (100-130 ms at 1M repositories).  PostgreSQL has had
``pg_trgm`` since 0016; SQLite gets an FTS5 table with the ``trigram`` tokenizer (SQLite >=
3.34): ``repositories_fts``, an *external-content* index of ``repositories.name`` keyed by the
repository's id (no second copy of the names, about 50 MB per million repositories).

Kept in sync by triggers, not by the writes that insert or delete repositories: a trigger runs
in the writing statement's own transaction, so every path (the registry's pushes, visibility
upserts, the collector's deletes, bulk SQL such as the scale benchmark's clones) updates the
index with the row, and a reader's snapshot sees both or neither.  The index is only a
candidate filter: the query keeps its ``LIKE``, so the result is the ``LIKE``'s exactly.

An existing database's index is built here ('rebuild': about 3 s at 1M repositories).  A
SQLite without FTS5 (rare: Python's own has it) logs one warning and goes on; the search then
walks the name index as before.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import logging

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

log = logging.getLogger("moorage.migrations")

FTS_TABLE = "repositories_fts"

_CREATE = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
    "name, content='repositories', content_rowid='id', tokenize='trigram')",
    # (an external-content table is told the old value to remove: exactly what was indexed)
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ai AFTER INSERT ON repositories BEGIN "
    f"INSERT INTO {FTS_TABLE} (rowid, name) VALUES (new.id, new.name); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ad AFTER DELETE ON repositories BEGIN "
    f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, name) VALUES ('delete', old.id, old.name); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_au AFTER UPDATE OF id, name ON repositories BEGIN "
    f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, name) VALUES ('delete', old.id, old.name); "
    f"INSERT INTO {FTS_TABLE} (rowid, name) VALUES (new.id, new.name); END",
    f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')",
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    try:
        with bind.begin_nested():  # a SAVEPOINT: no FTS5 must not abort the migration
            for stmt in _CREATE:
                op.execute(stmt)
    except Exception as exc:  # noqa: BLE001 - a SQLite without FTS5 or its trigram tokenizer
        log.warning(
            "SQLite's FTS5 trigram tokenizer is not available (%s): the web UI's repository search "
            "works without its index, by walking the name index",
            str(exc).splitlines()[0][:200],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for suffix in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER IF EXISTS {FTS_TABLE}_{suffix}")
    op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
