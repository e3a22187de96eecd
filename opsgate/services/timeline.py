"""The incident timeline: who did what, when, with what status."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.chat import TimelineLine
from opsgate.services.storage.models import TimelineEvent, utcnow

SYSTEM_ACTOR = "opsgate"
_HELD = "opsgate_timeline_held"
# The table, not the mapped class, for rows inserted together: the ORM's bulk layer has
# nothing to add to plain rows, and costs more than the statement.
_EVENTS = TimelineEvent.metadata.tables[TimelineEvent.__tablename__]


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
    values = {
        "incident_id": incident_id,
        "at": at or utcnow(),
        "kind": kind,
        "status": status,
        "actor": actor,
        "summary": summary,
    }
    held: list[dict[str, Any]] | None = session.info.get(_HELD)
    if held is not None:
        held.append(values)
    else:
        session.add(TimelineEvent(**values))


@contextlib.asynccontextmanager
async def recorded_together(session: AsyncSession) -> AsyncIterator[None]:
    """Events recorded inside the block are inserted as it ends, in the order they were
    recorded, with one statement.

    For a transaction that records many (a batch of new incidents): the ORM inserts events
    one at a time on SQLite, to read back each generated key, and building, tracking and
    then dropping an object per event costs more than the row. Inside the block an event is
    not yet a row, so nothing in it may look for the events it recorded; their incidents
    must be flushed before the block ends.
    """
    held: list[dict[str, Any]] = []
    session.info[_HELD] = held
    try:
        yield
    finally:
        del session.info[_HELD]
    if held:
        await session.execute(insert(_EVENTS), held)


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
