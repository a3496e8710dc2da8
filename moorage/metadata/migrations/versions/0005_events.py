"""webhooks, webhook delivery outbox, audit log .

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(512), nullable=False, server_default=""),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("actions", sa.Text, nullable=False),
        sa.Column("repositories", sa.Text, nullable=False),
        sa.Column("targets", sa.Text, nullable=False),
        sa.Column("timeout", sa.Float, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("namespace", sa.String(255), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.Float, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index("ix_webhook_deliveries_queue", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_order", "webhook_deliveries", ["endpoint", "repository", "status", "id"])
    op.create_index("ix_webhook_deliveries_history", "webhook_deliveries", ["endpoint", "id"])
    op.create_table(
        "audit_log",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("repository", sa.String(255), nullable=True),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("dedupe_key", sa.String(400), nullable=True, unique=True),
    )
    op.create_index("ix_audit_log_time", "audit_log", ["time"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor", "time"])
    op.create_index("ix_audit_log_repository", "audit_log", ["repository", "time"])
    op.create_index("ix_audit_log_action", "audit_log", ["action", "time"])


def downgrade() -> None:
    for name in ("audit_log", "webhook_deliveries", "webhooks"):
        op.drop_table(name)
