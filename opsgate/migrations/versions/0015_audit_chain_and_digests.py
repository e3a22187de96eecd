"""The tamper-evident audit chain; approvals and signatures bound to an operation digest.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("approval_id", sa.String(length=16), nullable=True),
        sa.Column("incident_id", sa.String(length=16), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_chain")),
    )
    op.create_index(
        op.f("ix_audit_chain_approval_id"), "audit_chain", ["approval_id"], unique=False
    )
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    # The row every append locks; it exists from the start so no append has to create it.
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    # Existing approvals keep no digest: their signatures (also without one) still count.
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("operation_digest", sa.String(length=64), nullable=True))
    with op.batch_alter_table("signatures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operation_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signatures", schema=None) as batch_op:
        batch_op.drop_column("operation_digest")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("operation_digest")
        batch_op.drop_column("agent")
    op.drop_table("audit_chain_head")
    op.drop_index(op.f("ix_audit_chain_approval_id"), table_name="audit_chain")
    op.drop_table("audit_chain")
