"""A group that fires again after it resolved opens a new incident, linked to the last one.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing incident is the first of its group.
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("generation", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(sa.Column("previous_incident_id", sa.String(16), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_incidents_previous_incident_id_incidents"),
            "incidents",
            ["previous_incident_id"],
            ["id"],
        )
        batch_op.drop_constraint(op.f("uq_incidents_group_key"), type_="unique")
        batch_op.create_unique_constraint(
            "uq_incidents_group_key_generation", ["group_key", "generation"]
        )


def downgrade() -> None:
    # Only a group's latest incident keeps its key; the older ones get a key of their own.
    op.execute(
        "UPDATE incidents SET group_key = group_key || '#' || id WHERE generation < "
        "(SELECT MAX(i.generation) FROM incidents AS i WHERE i.group_key = incidents.group_key)"
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_constraint("uq_incidents_group_key_generation", type_="unique")
        batch_op.create_unique_constraint(op.f("uq_incidents_group_key"), ["group_key"])
        batch_op.drop_constraint(
            op.f("fk_incidents_previous_incident_id_incidents"), type_="foreignkey"
        )
        batch_op.drop_column("previous_incident_id")
        batch_op.drop_column("generation")
