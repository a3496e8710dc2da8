"""Search-as-you-type for terms of one or two characters (issue 24).

A trigram index (``pg_trgm``, 0016; SQLite's FTS5 ``trigram``, 0017) holds nothing shorter than
three characters, so the first keystrokes of a search -- a rare ``q``, ``zz`` -- read every name
(52-88 ms at 1M repositories).  This adds an index of each name's short substrings:

* **PostgreSQL**: ``moorage_name_grams(name)``, an IMMUTABLE SQL function giving the distinct
  one- and two-character substrings of a name, under a GIN index (about 23 MB and 25 s to build
  at 1M repositories).  Its COST (1000, about its real 30 us a call) keeps the planner from
  testing it row by row where the index serves.  ``name LIKE '%t%'`` is case-sensitive there, so the grams are of the
  name as stored: a name contains a term of one or two characters exactly when the term is one
  of its grams.
* **SQLite**: the table ``repository_name_grams (gram, repository_id)``, WITHOUT ROWID, holding
  the two-character substrings of ``lower(name) || char(1)`` (SQLite's ``LIKE`` folds ASCII
  case, and so does its ``lower()``): a name contains ``c`` exactly when one of its grams starts
  with ``c`` (the trailing U+0001 gives the last character a gram).  About 11 rows and 140 MB per
  million repositories (names of ~16 characters), built in about 10 s.  Kept by triggers, like
  0017's index, so every writer (pushes, deletes, bulk SQL) keeps it in the writing
  statement's transaction.  ``name_gram_positions`` (1..1024) stands in for a series
  function, which triggers cannot have: names are at most 255 characters (``NAME_MAX``).

Both only name candidates; the search keeps its ``LIKE``.  If PostgreSQL refuses the function
(no privilege), the migration logs one warning and goes on: short terms then walk the name
index as before.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import logging

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

log = logging.getLogger("moorage.migrations")

GRAMS = "repository_name_grams"
POSITIONS = "name_gram_positions"
#: Longest name whose every gram the SQLite triggers index (4 x NAME_MAX).
MAX_POSITION = 1024

_GRAMS_OF_NEW = (
    f"SELECT substr(lower(new.name) || char(1), p.i, 2), new.id FROM {POSITIONS} p WHERE p.i <= length(new.name)"
)
_DELETE_OLD = (
    f"DELETE FROM {GRAMS} WHERE repository_id = old.id AND gram IN "
    f"(SELECT substr(lower(old.name) || char(1), p.i, 2) FROM {POSITIONS} p WHERE p.i <= length(old.name));"
)

_SQLITE = [
    f"CREATE TABLE IF NOT EXISTS {GRAMS} (gram TEXT NOT NULL, repository_id INTEGER NOT NULL, "
    "PRIMARY KEY (gram, repository_id)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS {POSITIONS} (i INTEGER PRIMARY KEY)",
    f"INSERT OR IGNORE INTO {POSITIONS} (i) WITH RECURSIVE s(i) AS "
    f"(SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {MAX_POSITION}) SELECT i FROM s",
    f"CREATE TRIGGER IF NOT EXISTS {GRAMS}_ai AFTER INSERT ON repositories BEGIN "
    f"INSERT OR IGNORE INTO {GRAMS} (gram, repository_id) {_GRAMS_OF_NEW}; END",
    f"CREATE TRIGGER IF NOT EXISTS {GRAMS}_ad AFTER DELETE ON repositories BEGIN {_DELETE_OLD} END",
    f"CREATE TRIGGER IF NOT EXISTS {GRAMS}_au AFTER UPDATE OF id, name ON repositories BEGIN {_DELETE_OLD} "
    f"INSERT OR IGNORE INTO {GRAMS} (gram, repository_id) {_GRAMS_OF_NEW}; END",
    f"INSERT OR IGNORE INTO {GRAMS} (gram, repository_id) "
    f"SELECT substr(lower(r.name) || char(1), p.i, 2), r.id FROM repositories r JOIN {POSITIONS} p ON p.i <= length(r.name)",
]

_POSTGRES = [
    "CREATE OR REPLACE FUNCTION moorage_name_grams(n text) RETURNS text[] "
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE COST 1000 AS $$ "
    "SELECT coalesce(array_agg(DISTINCT g), '{}') FROM ("
    "SELECT substr(n, i, 1) FROM generate_series(1, length(n)) i "
    "UNION ALL SELECT substr(n, i, 2) FROM generate_series(1, length(n) - 1) i) s(g) $$",
    "CREATE INDEX IF NOT EXISTS ix_repositories_name_grams ON repositories USING gin (moorage_name_grams(name))",
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for stmt in _SQLITE:
            op.execute(stmt)
        return
    try:
        with bind.begin_nested():  # a SAVEPOINT: a refusal must not abort the migration
            for stmt in _POSTGRES:
                op.execute(stmt)
    except Exception as exc:  # noqa: BLE001 - any refusal: go on without the index
        log.warning(
            "could not create the short-term search index (%s): the web UI's search for one or two "
            "characters works without it, by walking the name index",
            str(exc).splitlines()[0][:200],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for suffix in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS {GRAMS}_{suffix}")
        op.execute(f"DROP TABLE IF EXISTS {GRAMS}")
        op.execute(f"DROP TABLE IF EXISTS {POSITIONS}")
        return
    op.execute("DROP INDEX IF EXISTS ix_repositories_name_grams")
    op.execute("DROP FUNCTION IF EXISTS moorage_name_grams(text)")
