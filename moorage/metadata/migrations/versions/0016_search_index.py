"""Search-as-you-type on a million repository names: a trigram index on PostgreSQL (issue 24).

The UI's filter is a substring match (``name LIKE '%q%'``); a B-tree cannot serve it, so a rare
match read every name.  ``pg_trgm``'s GIN index serves LIKE with three or more characters.  The
extension ships with PostgreSQL (Debian: postgresql-15) and is "trusted" (a database owner may
create it) -- but a server may lack it or refuse it: then the migration logs that once and goes
on without the index (the search still works, by the name index walk).  SQLite: nothing to add.

Revision ID: 0016
Revises: 0012
Create Date: 2026-12-07
"""

import logging

from alembic import op

revision = "0016"
down_revision = "0012"
branch_labels = None
depends_on = None

log = logging.getLogger("moorage.migrations")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():  # a SAVEPOINT: a refusal must not abort the migration
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            op.execute("CREATE INDEX IF NOT EXISTS ix_repositories_name_trgm ON repositories USING gin (name gin_trgm_ops)")
    except Exception as exc:  # noqa: BLE001 - any refusal (missing extension, no privilege): go on without
        log.warning(
            "pg_trgm is not available on this PostgreSQL server (%s): the web UI's repository search "
            "works without its trigram index, by walking the name index",
            str(exc).splitlines()[0][:200],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_repositories_name_trgm")
