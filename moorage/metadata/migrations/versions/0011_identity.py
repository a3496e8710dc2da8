"""identity: directory users (users.source), grants to groups, OpenID Connect sign-ins.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa

revision = "0011"
down_revision = "0013"
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
    op.create_table(
        "oidc_logins",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("next_url", sa.String(1024), nullable=False),
        sa.Column("redirect_uri", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "oidc_identities",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("refresh_token", sa.Text, nullable=True),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("checked_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("oidc_identities")
    op.drop_table("oidc_logins")
    op.drop_table("group_grants")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("source")
