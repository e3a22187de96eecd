"""Alert-storm digests: when a chat's cards wait for its budget, one message lists them.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card_slot_at", sa.DateTime(), nullable=True))
    op.create_index(
        "ix_incidents_chat_id_card_slot_at",
        "incidents",
        ["chat_id", "card_slot_at"],
        unique=False,
    )
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("shown", sa.String(length=64), nullable=True),
        sa.Column("shown_resolved", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digests")),
    )
    op.create_index(op.f("ix_digests_chat_id"), "digests", ["chat_id"], unique=False)
    op.create_table(
        "digest_lines",
        sa.Column("incident_id", sa.String(length=16), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_digest_lines_incident_id_incidents"),
        ),
        sa.ForeignKeyConstraint(
            ["digest_id"], ["digests.id"], name=op.f("fk_digest_lines_digest_id_digests")
        ),
        sa.PrimaryKeyConstraint("incident_id", name=op.f("pk_digest_lines")),
    )
    op.create_index(op.f("ix_digest_lines_chat_id"), "digest_lines", ["chat_id"], unique=False)
    op.create_index(op.f("ix_digest_lines_digest_id"), "digest_lines", ["digest_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_digest_lines_digest_id"), table_name="digest_lines")
    op.drop_index(op.f("ix_digest_lines_chat_id"), table_name="digest_lines")
    op.drop_table("digest_lines")
    op.drop_index(op.f("ix_digests_chat_id"), table_name="digests")
    op.drop_table("digests")
    op.drop_index("ix_incidents_chat_id_card_slot_at", table_name="incidents")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("card_slot_at")
