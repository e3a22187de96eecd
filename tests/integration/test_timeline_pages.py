"""A timeline page is read through its index, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, insert, update
from sqlalchemy.engine import Connection

from opsgate.services import timeline
from opsgate.services.queries import IncidentQueries
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident, TimelineEvent

T0 = datetime(2026, 3, 1, tzinfo=UTC)
INDEX = "ix_timeline_events_incident_id_at_id"


async def busy_incidents(db: Database, events: int) -> None:
    """Two incidents with interleaved events, so a page must pick its own incident's out."""
    incidents = [
        {
            "id": incident_id,
            "group_key": incident_id,
            "source": "test",
            "status": "resolved",
            "chat_id": -100123,
            "created_at": T0,
            "updated_at": T0,
        }
        for incident_id in ("INC-AAAA0001", "INC-BBBB0002")
    ]
    rows = [
        {
            "incident_id": incidents[i % 2]["id"],
            # Several events share a second: the id orders them.
            "at": T0 + timedelta(seconds=i // 6),
            "kind": "alerts_updated",
            "actor": "alertmanager",
            "status": "info",
            "summary": str(i),
        }
        for i in range(events * 2)
    ]
    async with db.transaction() as session:
        await session.execute(insert(Incident), incidents)
        await session.execute(insert(TimelineEvent), rows)


async def test_pages_are_newest_first_without_gaps_or_repeats(database: Database) -> None:
    await busy_incidents(database, 95)
    seen: list[int] = []
    async with database.transaction() as session:
        for offset in range(0, 95, 30):
            page = await timeline.page(session, "INC-AAAA0001", offset, 30)
            assert (page.offset, page.total) == (offset, 95)
            seen += [int(line.summary) for line in page.events]
        past_the_end = await timeline.page(session, "INC-AAAA0001", 10_000, 30)
        nothing = await timeline.page(session, "INC-ZZZZ0000", 30, 30)
    assert seen == list(range(188, -1, -2))
    assert past_the_end.offset == 90 and [e.summary for e in past_the_end.events][-1] == "0"
    assert (nothing.offset, nothing.total, nothing.events) == (0, 0, [])


async def test_a_page_is_read_through_the_index(database: Database) -> None:
    await busy_incidents(database, 300)
    statements: list[tuple[str, Any]] = []

    def capture(
        _conn: Connection, _cursor: object, sql: str, params: Any, _context: object, _many: bool
    ) -> None:
        if "timeline_events" in sql:
            statements.append((sql, params))

    event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with database.transaction() as session:
            await timeline.page(session, "INC-AAAA0001", 60, 30)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    assert len(statements) == 2  # the count and the page, nothing else

    async with database.engine.connect() as conn:
        if not database.is_sqlite:
            # Tables this small are cheaper to scan; what matters is that the index can serve.
            await conn.exec_driver_sql("SET enable_seqscan = off")
        for sql, params in statements:
            explain = "EXPLAIN QUERY PLAN " if database.is_sqlite else "EXPLAIN "
            plan = " ".join(str(row) for row in await conn.exec_driver_sql(explain + sql, params))
            assert INDEX in plan, plan
            # The order comes from the index: no sort of the incident's events.
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


async def test_chat_queries_never_wait_for_the_write_lock(database: Database) -> None:
    """A command's answer reads: it neither waits for a vote's write transaction nor makes
    one wait (SQLite's writers queue on one lock; PostgreSQL's transactions never did)."""
    await busy_incidents(database, 60)
    queries = IncidentQueries(database)
    holding, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with database.transaction() as session:
            await session.execute(update(Incident).values(updated_at=T0))
            holding.set()
            await release.wait()

    held = asyncio.create_task(writer())
    await holding.wait()
    try:
        page = await asyncio.wait_for(queries.timeline("INC-AAAA0001", 0, 30), 5)
        assert page is not None and len(page.events) == 30
        await asyncio.wait_for(queries.open_incidents(0, 10), 5)
        await asyncio.wait_for(queries.pending_approvals(), 5)
        await asyncio.wait_for(queries.audit(None), 5)
        await asyncio.wait_for(queries.incident_for_card(-100123, 1), 5)
    finally:
        release.set()
        await held
