"""Read-only questions the chat asks: incidents, pending approvals, the audit log, health."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services import timeline
from opsgate.services.execution import approver_names
from opsgate.services.silences import latest_silence
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    Execution,
    Incident,
    Signature,
    utcnow,
)

AUDIT_RECENT = 10


# An incident's namespace as ``incident.namespace or "default"`` reads it, in SQL.
INCIDENT_NAMESPACE = func.coalesce(func.nullif(Incident.namespace, ""), "default")


@dataclass(frozen=True)
class IncidentRow:
    id: str
    severity: str
    alertname: str
    service: str
    namespace: str
    created_at: datetime
    approval: str
    # Who is on it, and until when the card's silence holds (see services/acks.py, silences.py).
    acked_by: str = ""
    silenced_until: datetime | None = None


@dataclass(frozen=True)
class IncidentPage:
    rows: list[IncidentRow]
    offset: int
    total: int


@dataclass(frozen=True)
class PendingRow:
    approval_id: str
    incident_id: str
    alertname: str
    action: str
    risk: str
    approvers: list[str]
    required: int
    expires_at: datetime


@dataclass(frozen=True)
class AuditRow:
    incident_id: str
    action: str
    approvers: list[str]
    status: str
    attempts: int
    duration_seconds: float | None
    finished_at: datetime | None
    detail: str
    verification: str = ""


class IncidentQueries:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def timeline(
        self, incident_id: str, offset: int, limit: int
    ) -> timeline.TimelinePage | None:
        """A page of the incident's events, newest first, or None when there is no such
        incident."""
        async with self._db.read() as session:
            if await session.get(Incident, incident_id) is None:
                return None
            return await timeline.page(session, incident_id, offset, limit)

    async def incident_for_card(self, chat_id: int, message_id: int) -> str | None:
        async with self._db.read() as session:
            found = await session.scalar(
                select(Incident.id).where(
                    Incident.chat_id == chat_id, Incident.message_id == message_id
                )
            )
        return found

    async def agent_evidence(self, incident_id: str) -> tuple[str, dict[str, Any]] | None:
        """The latest agent proposal's agent and evidence, or None when no agent proposed."""
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(Approval.agent, Approval.evidence)
                    .where(Approval.incident_id == incident_id, Approval.agent.is_not(None))
                    .order_by(Approval.created_at.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else (str(row[0]), dict(row[1] or {}))

    async def open_incidents(
        self, offset: int, limit: int, *, namespaces: Collection[str] | None = None
    ) -> IncidentPage:
        """Firing incidents, newest first, with the state of their latest approval; only
        those in ``namespaces`` when given (an incident without one is in "default")."""
        firing = [Incident.status == "firing"]
        if namespaces is not None:
            firing.append(INCIDENT_NAMESPACE.in_(sorted(namespaces)))
        async with self._db.read() as session:
            total = await session.scalar(select(func.count()).select_from(Incident).where(*firing))
            offset = max(0, min(offset, max(int(total or 0) - 1, 0)))
            incidents = list(
                await session.scalars(
                    select(Incident)
                    .where(*firing)
                    .order_by(Incident.created_at.desc(), Incident.id)
                    .offset(offset)
                    .limit(limit)
                )
            )
            rows = [
                IncidentRow(
                    i.id,
                    i.severity,
                    i.alertname,
                    i.service,
                    i.namespace,
                    i.created_at,
                    await _approval_state(session, i.id),
                    i.acked_by,
                    await _silenced_until(session, i.id),
                )
                for i in incidents
            ]
        return IncidentPage(rows, offset, int(total or 0))

    async def pending_approvals(self) -> list[PendingRow]:
        now = utcnow()
        async with self._db.read() as session:
            rows = (
                await session.execute(
                    select(Approval, Incident.alertname)
                    .join(Incident, Incident.id == Approval.incident_id)
                    .where(Approval.status == "pending", Approval.expires_at > now)
                    .order_by(Approval.expires_at)
                )
            ).all()
            return [
                PendingRow(
                    a.id,
                    a.incident_id,
                    alertname,
                    a.action,
                    a.risk,
                    await approver_names(session, a.id),
                    a.required_approvals,
                    a.expires_at,
                )
                for a, alertname in rows
            ]

    async def audit(self, incident_id: str | None) -> list[AuditRow] | None:
        """Executions of one incident (None if it does not exist), or the latest overall."""
        async with self._db.read() as session:
            query = select(Execution, Approval).join(Approval, Approval.id == Execution.approval_id)
            if incident_id is not None:
                if await session.get(Incident, incident_id) is None:
                    return None
                query = query.where(Approval.incident_id == incident_id).order_by(
                    Execution.created_at
                )
            else:
                query = query.order_by(Execution.created_at.desc()).limit(AUDIT_RECENT)
            rows = (await session.execute(query)).all()
            return [
                AuditRow(
                    approval.incident_id,
                    approval.action,
                    await approver_names(session, approval.id),
                    execution.status,
                    execution.attempts,
                    execution.duration_seconds,
                    execution.finished_at,
                    execution.result_detail,
                    f"{execution.verification_status}: {execution.verification_detail}"
                    if execution.verification_status
                    else "",
                )
                for execution, approval in rows
            ]


async def _silenced_until(session: AsyncSession, incident_id: str) -> datetime | None:
    silence = await latest_silence(session, incident_id)
    return silence.ends_at if silence is not None and silence.active else None


async def _approval_state(session: AsyncSession, incident_id: str) -> str:
    approval = await session.scalar(
        select(Approval)
        .where(Approval.incident_id == incident_id)
        .order_by(Approval.created_at.desc())
        .limit(1)
    )
    if approval is None:
        return "no action proposed"
    if approval.status == "pending":
        signed = await session.scalar(
            select(func.count())
            .select_from(Signature)
            .where(Signature.approval_id == approval.id, Signature.decision == "approve")
        )
        return f"pending {signed}/{approval.required_approvals}"
    if approval.status == "approved":
        execution = await session.get(Execution, approval.id)
        return execution.status if execution else "approved"
    return approval.status
