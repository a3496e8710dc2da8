"""accounts service: which token minted a token (revocation cascades), and the face and
outcome of every audit entry.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(32), nullable=True))
        batch.create_index("ix_access_tokens_parent", ["parent_id"])
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("face", sa.String(16), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("outcome")
        batch.drop_column("face")
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_index("ix_access_tokens_parent")
        batch.drop_column("parent_id")
