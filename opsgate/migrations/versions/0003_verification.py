"""Post-execution verification on executions.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verification_status", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("verification_detail", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("verified_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("verified_at")
        batch_op.drop_column("verification_detail")
        batch_op.drop_column("verification_status")
