"""Timeline events indexed for paging newest first; it replaces the index on incident_id alone.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_timeline_events_incident_id_at_id",
        "timeline_events",
        ["incident_id", "at", "id"],
        unique=False,
    )
    op.drop_index("ix_timeline_events_incident_id", table_name="timeline_events")


def downgrade() -> None:
    op.create_index(
        "ix_timeline_events_incident_id", "timeline_events", ["incident_id"], unique=False
    )
    op.drop_index("ix_timeline_events_incident_id_at_id", table_name="timeline_events")
