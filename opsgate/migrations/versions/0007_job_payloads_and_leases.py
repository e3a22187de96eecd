"""Typed job payloads, fenced leases, execution phases, replies whose delivery is unknown.

Revision ID: 0007
Revises: 0006
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# How each kind's old ``ref`` string maps to its payload (the reverse of the old encoders).
_FIELDS: dict[str, tuple[str, ...]] = {
    "execute": ("approval_id",),
    "sync_card": ("incident_id",),
    "publish_result": ("approval_id",),
    "notify": ("approval_id", "destination"),
    "verify": ("approval_id",),
    "learn": ("approval_id", "event"),
    "knowledge": ("approval_id",),
    "extract_playbook": ("incident_id",),
}


def _payload(kind: str, ref: str, serial_key: str) -> dict[str, Any]:
    fields = _FIELDS.get(kind, ("ref",))
    parts = ref.split("|", len(fields) - 1) if len(fields) > 1 else [ref]
    payload = dict(zip(fields, parts, strict=False))
    if kind == "publish_result":
        payload["incident_id"] = serial_key
    return payload


def _serial(kind: str, payload: dict[str, Any], old: str) -> str:
    match kind:
        case "sync_card" | "publish_result":
            return f"card:{payload['incident_id']}"
        case "notify":
            return f"destination:{payload.get('destination', '')}"
        case "learn":
            return "learning"
        case "extract_playbook":
            return f"playbook:{payload['incident_id']}"
        case _:
            return f"{kind}:{old}"


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("lease_token", sa.String(length=64), nullable=True))
        batch_op.alter_column("serial_key", type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column("lease_owner", type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column("dedupe_key", type_=sa.Text(), existing_nullable=True)
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.Integer()),
        sa.column("kind", sa.String()),
        sa.column("ref", sa.String()),
        sa.column("key", sa.Text()),
        sa.column("payload", sa.JSON()),
        sa.column("serial_key", sa.Text()),
        sa.column("dedupe_key", sa.Text()),
    )
    conn = op.get_bind()
    for row in conn.execute(sa.select(jobs.c.id, jobs.c.kind, jobs.c.ref, jobs.c.serial_key)):
        payload = _payload(row.kind, row.ref, row.serial_key)
        key = row.ref
        conn.execute(
            jobs.update()
            .where(jobs.c.id == row.id)
            .values(
                key=key,
                payload=payload,
                serial_key=_serial(row.kind, payload, row.ref),
            )
        )
    conn.execute(
        jobs.update()
        .where(jobs.c.dedupe_key.is_not(None))
        .values(dedupe_key=jobs.c.kind + ":" + jobs.c.ref)
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_ref")
        batch_op.drop_column("ref")
        batch_op.alter_column("key", server_default=None)
        batch_op.alter_column("payload", server_default=None)
        batch_op.create_index(batch_op.f("ix_jobs_key"), ["key"], unique=False)
        batch_op.create_unique_constraint(batch_op.f("uq_jobs_lease_token"), ["lease_token"])

    with op.batch_alter_table("execution_attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("phase", sa.String(length=16), nullable=False, server_default="preparing")
        )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "result_delivery_unknown", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("result_delivery_unknown")
    with op.batch_alter_table("execution_attempts", schema=None) as batch_op:
        batch_op.drop_column("phase")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ref", sa.Text(), nullable=False, server_default=""))
    op.execute("UPDATE jobs SET ref = key")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_jobs_lease_token"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_jobs_key"))
        batch_op.drop_column("lease_token")
        batch_op.drop_column("payload")
        batch_op.drop_column("key")
        batch_op.create_index("ix_jobs_ref", ["ref"], unique=False)
