"""distribution import (what `moorage serve` brought in from a registry:2 tree on start);
manifests.untagged_at (a tag delete left the manifest untagged: GC collects it after the grace).

Revision ID: 0015
Revises: 0008
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

revision = "0015"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): instant on both SQLite and PostgreSQL.
    op.add_column("manifests", sa.Column("untagged_at", sa.Float, nullable=True))
    op.create_table(
        "distribution_imports",
        sa.Column("source", sa.String(1024), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("distribution_imports")
    op.drop_column("manifests", "untagged_at")
