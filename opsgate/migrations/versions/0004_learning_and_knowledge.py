"""Learning (playbook statistics, dispositions) and the knowledge base with full-text search.

Search is native to each database: an FTS5 table kept in step by triggers on SQLite, a GIN
expression index over ``to_tsvector`` on PostgreSQL.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PG_DOCUMENT = (
    "to_tsvector('english', coalesce(title, '') || ' ' || coalesce(content, '') || ' ' "
    "|| coalesce(tags, ''))"
)


def upgrade() -> None:
    op.create_table(
        "playbook_stats",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("signature", sa.String(length=255), nullable=False),
        sa.Column("operation", sa.String(length=500), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("verified_success", sa.Integer(), nullable=False),
        sa.Column("verified_degraded", sa.Integer(), nullable=False),
        sa.Column("verified_failed", sa.Integer(), nullable=False),
        sa.Column("verified_timeout", sa.Integer(), nullable=False),
        sa.Column("wrong_diagnoses", sa.Integer(), nullable=False),
        sa.Column("trust", sa.Float(), nullable=False),
        sa.Column("recovery_seconds_total", sa.Float(), nullable=False),
        sa.Column("recoveries", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbook_stats")),
        sa.UniqueConstraint("signature", "operation", name=op.f("uq_playbook_stats_signature")),
    )
    op.create_table(
        "dispositions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("signature", sa.String(length=255), nullable=False),
        sa.Column("disposition", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispositions")),
        sa.UniqueConstraint("signature", "disposition", name=op.f("uq_dispositions_signature")),
    )
    op.create_table(
        "learning_applied",
        sa.Column("approval_id", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("approval_id", "event", name=op.f("pk_learning_applied")),
    )
    op.create_table(
        "knowledge_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("approval_id", sa.String(length=16), nullable=False),
        sa.Column("incident_id", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("referenced_at", sa.DateTime(), nullable=True),
        sa.Column("reference_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_knowledge_entries_incident_id_incidents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_entries")),
        sa.UniqueConstraint("approval_id", name=op.f("uq_knowledge_entries_approval_id")),
    )
    with op.batch_alter_table("knowledge_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_knowledge_entries_incident_id"), ["incident_id"], unique=False
        )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE knowledge_fts USING fts5("
            "title, content, tags, content='knowledge_entries', content_rowid='id')"
        )
        op.execute(
            "CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_entries BEGIN "
            "INSERT INTO knowledge_fts(rowid, title, content, tags) "
            "VALUES (new.id, new.title, new.content, new.tags); END"
        )
        op.execute(
            "CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_entries BEGIN "
            "INSERT INTO knowledge_fts(knowledge_fts, rowid, title, content, tags) "
            "VALUES ('delete', old.id, old.title, old.content, old.tags); END"
        )
        op.execute(
            "CREATE TRIGGER knowledge_fts_update AFTER UPDATE ON knowledge_entries BEGIN "
            "INSERT INTO knowledge_fts(knowledge_fts, rowid, title, content, tags) "
            "VALUES ('delete', old.id, old.title, old.content, old.tags); "
            "INSERT INTO knowledge_fts(rowid, title, content, tags) "
            "VALUES (new.id, new.title, new.content, new.tags); END"
        )
    else:
        op.execute(
            f"CREATE INDEX ix_knowledge_entries_fts ON knowledge_entries USING GIN ({PG_DOCUMENT})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS knowledge_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS knowledge_fts")
    op.drop_table("knowledge_entries")
    op.drop_table("learning_applied")
    op.drop_table("dispositions")
    op.drop_table("playbook_stats")
