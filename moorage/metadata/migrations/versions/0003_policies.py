"""retention, immutable tags, quotas, GC state .

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_policies",
        sa.Column("pattern", sa.String(255), primary_key=True),
        sa.Column("keep_last", sa.Integer, nullable=True),
        sa.Column("keep_regex", sa.String(255), nullable=True),
        sa.Column("expire_days", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "immutable_tags",
        sa.Column("repo_pattern", sa.String(255), primary_key=True),
        sa.Column("tag_regex", sa.String(255), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "quotas",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("limit_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "gc_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("manifests_removed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("blobs_removed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("bytes_removed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tags_removed", sa.Integer, nullable=False, server_default="0"),
    )
    # The sweep looks for unreferenced blobs by these columns.
    # Partial (tombstones only): a full index would make SQLite scan every live blob for
    # "deleting_since IS NULL" instead of using the primary key.
    op.create_index("ix_blobs_deleting_since", "blobs", ["deleting_since"],
                    sqlite_where=sa.text("deleting_since IS NOT NULL"),
                    postgresql_where=sa.text("deleting_since IS NOT NULL"))
    op.create_index("ix_tags_updated", "tags", ["repository_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_tags_updated", "tags")
    op.drop_index("ix_blobs_deleting_since", "blobs")
    for name in ("gc_runs", "quotas", "immutable_tags", "retention_policies"):
        op.drop_table(name)
