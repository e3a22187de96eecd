"""Playbooks extracted from resolved, verified incidents.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "playbooks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alertname", sa.String(length=255), nullable=False),
        sa.Column("match_key", sa.String(length=255), nullable=False),
        sa.Column("match_labels", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source_incident_id", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbooks")),
        sa.UniqueConstraint(
            "alertname", "match_key", "action", name=op.f("uq_playbooks_alertname")
        ),
    )


def downgrade() -> None:
    op.drop_table("playbooks")
