"""Indexes for a million repositories: byte-ordered name indexes on PostgreSQL (issue 24).

The catalog, the tags list and the UI's listings order names byte-wise (``COLLATE "C"``: the
OCI lexical order, and SQLite's).  PostgreSQL's unique indexes on ``repositories.name`` and
``tags (repository_id, name)`` use the database's locale collation, so they cannot serve that
order: every page sorted all rows first (237 ms per catalog page at 1M repositories).  These
indexes use the "C" collation, so a page is an index range scan.  SQLite compares with BINARY
already (its unique indexes serve), so only the partial index of public repositories (the
catalog of a caller who may pull public repositories) is created there.

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # The catalog of a caller who may see public repositories: an ordered walk of the
        # public ones only (MetadataStore.catalog_in).
        op.execute("CREATE INDEX IF NOT EXISTS ix_repositories_public_name ON repositories (name) WHERE public = 1")
        return
    op.execute('CREATE INDEX IF NOT EXISTS ix_repositories_public_name ON repositories (name COLLATE "C") WHERE public')
    op.execute('CREATE INDEX IF NOT EXISTS ix_repositories_name_c ON repositories (name COLLATE "C")')
    op.execute('CREATE INDEX IF NOT EXISTS ix_tags_repository_name_c ON tags (repository_id, name COLLATE "C")')
    # The UI's "repositories with manifests" and GC's per-repository batches probe manifests by
    # repository; the unique (repository_id, digest) constraint's index serves that already.


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_repositories_public_name")
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_tags_repository_name_c")
    op.execute("DROP INDEX IF EXISTS ix_repositories_name_c")
