"""web UI: browser sessions, hourly push/pull activity, repository sort figures .

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_ui_sessions_expires", "ui_sessions", ["expires_at"])
    op.create_table(
        "ui_activity",
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("pushes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("pulls", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "ui_repo_stats",
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tags", sa.Integer, nullable=False),
        sa.Column("last_push", sa.Float, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ui_repo_stats_last_push", "ui_repo_stats", ["last_push"])
    op.create_index("ix_ui_repo_stats_size", "ui_repo_stats", ["size"])


def downgrade() -> None:
    op.drop_table("ui_repo_stats")
    op.drop_table("ui_activity")
    op.drop_index("ix_ui_sessions_expires", "ui_sessions")
    op.drop_table("ui_sessions")
