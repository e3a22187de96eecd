"""Tables. Every fact the approval loop depends on lives here, never only in memory."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite has no time zones, PostgreSQL does."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Incident(Base):
    __tablename__ = "incidents"
    # The card quota counts a chat's recent cards and its waiting ones (services/card_quota.py).
    __table_args__ = (
        Index("ix_incidents_chat_id_card_slot_at", "chat_id", "card_slot_at"),
        # A group that fires again after it resolved opens its next incident; two payloads
        # racing to open the same one collide here (see services/incidents.py).
        UniqueConstraint("group_key", "generation", name="uq_incidents_group_key_generation"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    group_key: Mapped[str] = mapped_column(Text)
    # 1 for a group's first incident, one more for each time it fired again after resolving.
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    previous_incident_id: Mapped[str | None] = mapped_column(
        String(16), ForeignKey("incidents.id"), nullable=True
    )
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    alertname: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(32), default="")
    service: Mapped[str] = mapped_column(Text, default="")
    namespace: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    external_url: Mapped[str] = mapped_column(Text, default="")
    firing_count: Mapped[int] = mapped_column(Integer, default=0)
    alert_count: Mapped[int] = mapped_column(Integer, default=0)
    proposed_action: Mapped[str] = mapped_column(Text, default="")
    action_refusal: Mapped[str] = mapped_column(Text, default="")
    chat_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A card that stopped being the incident's card (an undo is proposed on a new one): its
    # buttons are taken off once the new card is posted (see services/cards.py).
    retired_card_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Where results go besides the alert thread ("tg:<chat id>", "notifier:<name>"), fixed by
    # the route when the incident opened so a later policy edit does not reroute it midway.
    result_destinations: Mapped[list[Any]] = mapped_column(default=list)
    # A past case shown on the card, looked up once when the card is first posted.
    related_case: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # A digest of what the last Alertmanager payload wrote to this incident's alerts, so a
    # repeat that would change nothing is recognised with one read (see services/incidents.py).
    ingest_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When the chat's card quota let this incident's card go out (see services/digests.py).
    card_slot_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Who said "I am on it" (see services/acks.py); the first one stays.
    acked_by: Mapped[str] = mapped_column(Text, default="", server_default="")
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Silence(Base):
    """An Alertmanager silence set from an incident's card (see services/silences.py).

    The row is written before Alertmanager is called, without ``alertmanager_id``, so two taps
    cannot make two silences; it gets the id once Alertmanager answered, or is deleted.
    """

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    alertmanager_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Where it was made, so it is expired there whatever the setting says later.
    alertmanager_url: Mapped[str] = mapped_column(Text)
    matchers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    expired_by: Mapped[str] = mapped_column(Text, default="")
    expired_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Digest(Base):
    """One digest message of a chat: the incidents whose cards wait for the chat's budget."""

    __tablename__ = "digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    thread_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Full, or every incident on it got its card or resolved: new lines start a new message.
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    # Full, and what it shows can no longer change: the digest job leaves it alone.
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the message shows: a hash of its lines and how many say resolved (see digests.py).
    shown: Mapped[str | None] = mapped_column(String(64), nullable=True)
    shown_resolved: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]


class DigestLine(Base):
    """An incident listed on a digest; ``digest_id`` is unset until the digest job places it."""

    __tablename__ = "digest_lines"

    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    digest_id: Mapped[int | None] = mapped_column(
        ForeignKey("digests.id"), nullable=True, index=True
    )
    created_at: Mapped[datetime]


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("incident_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    starts_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(nullable=True)
    generator_url: Mapped[str] = mapped_column(Text, default="")


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    action: Mapped[str] = mapped_column(Text)
    operation: Mapped[dict[str, Any]]
    description: Mapped[str] = mapped_column(Text, default="")
    risk: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(Text)
    requester_user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The agent identity (from the policy's agents) that proposed it; None for people/alerts.
    agent: Mapped[str | None] = mapped_column(Text, nullable=True)
    # sha256 of the exact operation (services/action_digest.py); what every signature is over.
    operation_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    required_approvals: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")
    # What the change will do, read from the target when it was proposed (operation_specs.Plan);
    # None until the plan job ran.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)


class Signature(Base):
    __tablename__ = "signatures"
    __table_args__ = (UniqueConstraint("approval_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(ForeignKey("approvals.id"), index=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    username: Mapped[str] = mapped_column(Text, default="")
    decision: Mapped[str] = mapped_column(String(16))
    # The approval's operation digest the signer saw: a signature counts only for it.
    operation_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime]
    # Why the signature stopped counting under the policy in force; None while it counts.
    lapsed: Mapped[str | None] = mapped_column(Text, default=None)


class Execution(Base):
    __tablename__ = "executions"

    approval_id: Mapped[str] = mapped_column(ForeignKey("approvals.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry_delay_seconds: Mapped[float]
    next_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_error_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    result_message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Telegram took the reply but its answer was lost: it may be in the chat, so it is not
    # sent again.
    result_delivery_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending | success | degraded | failed | timeout; None when there is nothing to verify.
    verification_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    verification_detail: Mapped[str] = mapped_column(Text, default="")
    verified_at: Mapped[datetime | None] = mapped_column(nullable=True)

    @property
    def duration_seconds(self) -> float | None:
        """From the first attempt to the end, retry waits included; None until it ended."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class ExecutionAttempt(Base):
    """The audit log: one row per attempt against the cluster."""

    __tablename__ = "execution_attempts"
    __table_args__ = (UniqueConstraint("approval_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(ForeignKey("approvals.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(Text)
    approved_by: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    # How far a running attempt got: "preparing" (reads and dry run, harmless to repeat) or
    # "applying" (the real call may have reached the cluster).
    phase: Mapped[str] = mapped_column(String(16), default="preparing")
    dry_run_ok: Mapped[bool] = mapped_column(Boolean, default=False)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class AuditRecord(Base):
    """One link of the tamper-evident audit chain (see services/audit_chain.py)."""

    __tablename__ = "audit_chain"

    # Gapless, assigned under the head row's lock: the chain's order.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    approval_id: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    incident_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    actor: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's one head row: its lock serialises appends across replicas."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class TimelineEvent(Base):
    __tablename__ = "timeline_events"
    # /timeline reads one page newest first; the index also serves lookups by incident alone.
    __table_args__ = (Index("ix_timeline_events_incident_id_at_id", "incident_id", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="info")
    actor: Mapped[str] = mapped_column(Text, default="opsgate")
    summary: Mapped[str] = mapped_column(Text)


class Chat(Base):
    """What opsgate learned about a chat: its new id after a supergroup migration, or that
    it removed or blocked the bot."""

    __tablename__ = "chats"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    migrated_to: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    inactive_reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime]


class PlaybookStat(Base):
    """What one remediation achieved against one kind of alert, accumulated."""

    __tablename__ = "playbook_stats"
    __table_args__ = (UniqueConstraint("signature", "operation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    signature: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    verified_success: Mapped[int] = mapped_column(Integer, default=0)
    verified_degraded: Mapped[int] = mapped_column(Integer, default=0)
    verified_failed: Mapped[int] = mapped_column(Integer, default=0)
    verified_timeout: Mapped[int] = mapped_column(Integer, default=0)
    wrong_diagnoses: Mapped[int] = mapped_column(Integer, default=0)
    trust: Mapped[float] = mapped_column(Float)
    recovery_seconds_total: Mapped[float] = mapped_column(Float, default=0.0)
    recoveries: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]


class Disposition(Base):
    """How humans (or auto-approve) disposed of proposals for one kind of alert."""

    __tablename__ = "dispositions"
    __table_args__ = (UniqueConstraint("signature", "disposition"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    signature: Mapped[str] = mapped_column(String(255))
    disposition: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer, default=0)


class LearningApplied(Base):
    """Which learning events were counted, so a retried job never counts one twice."""

    __tablename__ = "learning_applied"

    approval_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    event: Mapped[str] = mapped_column(String(32), primary_key=True)
    applied_at: Mapped[datetime]


class KnowledgeEntry(Base):
    """One incident case, written back after every execution, searchable with /kb."""

    __tablename__ = "knowledge_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(String(16), unique=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    title: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    tags: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(64), default="general")
    status: Mapped[str] = mapped_column(String(16), default="draft")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    referenced_at: Mapped[datetime | None] = mapped_column(nullable=True)
    reference_count: Mapped[int] = mapped_column(Integer, default=0)


class Playbook(Base):
    """A remediation that worked for a kind of alert, proposed again when that alert returns."""

    __tablename__ = "playbooks"
    __table_args__ = (UniqueConstraint("alertname", "match_key", "action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alertname: Mapped[str] = mapped_column(String(255))
    # The key labels it matches, rendered "namespace=shop,service=checkout".
    match_key: Mapped[str] = mapped_column(String(255))
    match_labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    action: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))
    source_incident_id: Mapped[str] = mapped_column(String(16))
    decided_by: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Job(Base):
    """A durable unit of work: what must happen survives a restart."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    # The payload's identity (see services/job_kinds.py): for logs, coalescing, look-ups.
    key: Mapped[str] = mapped_column(Text, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Jobs sharing a serial key never run at the same time (e.g. every edit of one card).
    serial_key: Mapped[str] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    run_at: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str] = mapped_column(Text, default="")
    # New with every claim: writes of a worker whose token is no longer here are refused.
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    dedupe_key: Mapped[str | None] = mapped_column(Text, unique=True, nullable=True)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


# Full-text search objects each database keeps beside knowledge_entries (see migration 0004);
# they are not mapped, and schema comparison leaves them alone.
SEARCH_OBJECTS = ("knowledge_fts", "ix_knowledge_entries_fts")


def is_mapped_schema_object(name: str | None) -> bool:
    return not (name or "").startswith(SEARCH_OBJECTS)


def utcnow() -> datetime:
    return datetime.now(UTC)
