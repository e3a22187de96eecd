"""The incident timeline: who did what, when, with what status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.chat import TimelineLine
from opsgate.services.storage.models import TimelineEvent, utcnow

SYSTEM_ACTOR = "opsgate"


def record(
    session: AsyncSession,
    incident_id: str,
    kind: str,
    summary: str,
    *,
    actor: str = SYSTEM_ACTOR,
    status: str = "info",
    at: datetime | None = None,
) -> None:
    """Add an event inside the caller's transaction: it is stored exactly when the fact is."""
    session.add(
        TimelineEvent(
            incident_id=incident_id,
            at=at or utcnow(),
            kind=kind,
            status=status,
            actor=actor,
            summary=summary,
        )
    )


async def events(session: AsyncSession, incident_id: str) -> list[TimelineLine]:
    rows = await session.scalars(
        select(TimelineEvent)
        .where(TimelineEvent.incident_id == incident_id)
        .order_by(TimelineEvent.at, TimelineEvent.id)
    )
    return [TimelineLine(e.at, e.actor, e.kind, e.status, e.summary) for e in rows]
