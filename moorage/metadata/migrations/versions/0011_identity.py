"""identity: directory users (users.source) and grants to groups.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: a local user (password or robot); "ldap": provisioned at first directory sign-in.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
    op.create_table(
        "group_grants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_name", sa.String(255), nullable=False),
        sa.Column("pattern", sa.String(255), nullable=False),
        sa.Column("actions", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("group_name", "pattern", name="uq_group_grants_group_pattern"),
    )


def downgrade() -> None:
    op.drop_table("group_grants")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("source")
