"""The incident timeline: who did what, when, with what status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
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


@dataclass(frozen=True)
class TimelinePage:
    """Some of an incident's events, newest first; ``offset`` counts from the newest."""

    incident_id: str
    events: list[TimelineLine]
    offset: int
    total: int


async def page(session: AsyncSession, incident_id: str, offset: int, limit: int) -> TimelinePage:
    """One page read through the (incident_id, at, id) index: a busy incident's thousands of
    events are counted, never loaded."""
    of_incident = TimelineEvent.incident_id == incident_id
    total = int(
        await session.scalar(select(func.count()).select_from(TimelineEvent).where(of_incident))
        or 0
    )
    # A page past the end (events cannot shrink, but data can be forged) shows the oldest page.
    offset = max(0, min(offset, (max(total, 1) - 1) // limit * limit))
    rows = await session.scalars(
        select(TimelineEvent)
        .where(of_incident)
        .order_by(TimelineEvent.at.desc(), TimelineEvent.id.desc())
        .offset(offset)
        .limit(limit)
    )
    lines = [TimelineLine(e.at, e.actor, e.kind, e.status, e.summary) for e in rows]
    return TimelinePage(incident_id, lines, offset, total)
