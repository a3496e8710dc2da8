"""integrity: upload-session writer claims, session owners, blob quarantine, scrub progress.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): instant on both SQLite and PostgreSQL.
    op.add_column("uploads", sa.Column("writer", sa.String(64), nullable=True))
    op.add_column("uploads", sa.Column("writer_until", sa.Float, nullable=True))
    op.add_column("uploads", sa.Column("owner", sa.String(64), nullable=True))
    op.create_index("ix_uploads_repository", "uploads", ["repository_id"])
    op.create_index("ix_uploads_owner", "uploads", ["owner"])
    op.add_column("blobs", sa.Column("quarantined_at", sa.Float, nullable=True))
    op.create_table(
        "scrub_progress",
        sa.Column("scope", sa.String(255), primary_key=True),
        sa.Column("last_digest", sa.String(200), nullable=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("checked", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("checked_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("corrupt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_table(
        "quarantined_blobs",
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("actual", sa.String(200), nullable=True),
        sa.Column("actual_size", sa.BigInteger, nullable=True),
        sa.Column("detected_at", sa.Float, nullable=False),
        sa.Column("repaired_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("quarantined_blobs")
    op.drop_table("scrub_progress")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("quarantined_at")
    op.drop_index("ix_uploads_owner", "uploads")
    op.drop_index("ix_uploads_repository", "uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("owner")
        batch.drop_column("writer_until")
        batch.drop_column("writer")
