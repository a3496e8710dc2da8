"""The UI's repository list at a million repositories (issue 24): search and sort by index.

Sorting by last push or size: ``ui_repo_stats`` gets the repository's name, so the order
(figure DESC, name) is one index walk; the rows are backfilled here.

Search-as-you-type, a trigram index on PostgreSQL:

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

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0012"
branch_labels = None
depends_on = None

log = logging.getLogger("moorage.migrations")


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("ui_repo_stats", sa.Column("name", sa.String(255), nullable=True))
    op.execute(
        "UPDATE ui_repo_stats SET name = (SELECT name FROM repositories WHERE repositories.id = ui_repo_stats.repository_id)"
    )
    if bind.dialect.name != "postgresql":
        op.execute("CREATE INDEX IF NOT EXISTS ix_ui_repo_stats_push_name ON ui_repo_stats (coalesce(last_push, 0) DESC, name)")
        op.execute("CREATE INDEX IF NOT EXISTS ix_ui_repo_stats_size_name ON ui_repo_stats (size DESC, name)")
        return
    op.execute(
        'CREATE INDEX IF NOT EXISTS ix_ui_repo_stats_push_name ON ui_repo_stats ((coalesce(last_push, 0)) DESC, name COLLATE "C")'
    )
    op.execute('CREATE INDEX IF NOT EXISTS ix_ui_repo_stats_size_name ON ui_repo_stats (size DESC, name COLLATE "C")')
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
    op.execute("DROP INDEX IF EXISTS ix_ui_repo_stats_push_name")
    op.execute("DROP INDEX IF EXISTS ix_ui_repo_stats_size_name")
    with op.batch_alter_table("ui_repo_stats") as batch:
        batch.drop_column("name")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_repositories_name_trgm")
