"""image insight: advisories, inventories, findings, pull policies.

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insight_advisories",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("modified", sa.String(64), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("aliases", sa.Text, nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("imported_at", sa.Float, nullable=False),
    )
    op.create_table(
        "insight_affected",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("advisory_id", sa.String(255), sa.ForeignKey("insight_advisories.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ecosystem", sa.String(128), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("package", sa.String(512), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_index("ix_insight_affected_advisory_id", "insight_affected", ["advisory_id"])
    op.create_index("ix_insight_affected_pkg", "insight_affected", ["family", "package"])
    op.create_table(
        "insight_images",
        sa.Column("digest", sa.String(255), primary_key=True),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("os", sa.String(255), nullable=False),
        sa.Column("platform", sa.String(255), nullable=False),
        sa.Column("package_count", sa.Integer, nullable=False),
        sa.Column("packages", sa.Text, nullable=False),
        sa.Column("skipped", sa.Text, nullable=False),
        sa.Column("sboms", sa.Text, nullable=False),
        sa.Column("scanned_at", sa.Float, nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("worst", sa.String(16), nullable=False),
        sa.Column("matched_generation", sa.Integer, nullable=False),
    )
    op.create_table(
        "insight_image_packages",
        sa.Column("digest", sa.String(255), sa.ForeignKey("insight_images.digest", ondelete="CASCADE"), nullable=False),
        sa.Column("ecosystem", sa.String(64), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
    )
    op.create_index("ix_insight_image_packages_digest", "insight_image_packages", ["digest"])
    op.create_index("ix_insight_image_packages_name", "insight_image_packages", ["name"])
    op.create_table(
        "insight_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "insight_policies",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("block_severity", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "insight_allowlist",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("advisory_id", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for name in ("insight_allowlist", "insight_policies", "insight_state", "insight_image_packages",
                 "insight_images", "insight_affected", "insight_advisories"):
        op.drop_table(name)
