"""ui_sessions.credential: a fingerprint of the credential a session was opened with.

htpasswd mode keeps no password history in the database: to end a web session when the user's
password changes (docs/ui.md), the session remembers an HMAC of the user's htpasswd hash line
keyed with the session's own cookie value, and stops being valid when the line differs.
Sessions made before this column have none and are asked to sign in again.

Revision ID: 0013
Revises: 0008
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ui_sessions", sa.Column("credential", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ui_sessions") as batch:
        batch.drop_column("credential")
