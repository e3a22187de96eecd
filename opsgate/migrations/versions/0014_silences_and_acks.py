"""Silences set from the card, and who acknowledged an incident.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acked_by", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("acked_at", sa.DateTime(), nullable=True))
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(16), nullable=False),
        sa.Column("alertmanager_id", sa.String(64), nullable=True),
        sa.Column("alertmanager_url", sa.Text(), nullable=False),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("expired_by", sa.Text(), nullable=False),
        sa.Column("expired_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_silences_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    op.create_index(op.f("ix_silences_incident_id"), "silences", ["incident_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_silences_incident_id"), table_name="silences")
    op.drop_table("silences")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("acked_at")
        batch_op.drop_column("acked_by")
