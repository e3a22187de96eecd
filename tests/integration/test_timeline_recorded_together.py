"""Events recorded together go in as rows when the block ends, in the order recorded."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, insert, select

from opsgate.services import timeline
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident, TimelineEvent

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def test_events_recorded_together_are_one_insert_in_their_order(database: Database) -> None:
    inserts: Counter[str] = Counter()

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO timeline_events"):
            inserts[statement] += 1

    async with database.transaction() as session:
        await session.execute(
            insert(Incident),
            [
                {
                    "id": incident_id,
                    "group_key": incident_id,
                    "source": "test",
                    "status": "firing",
                    "chat_id": -100123,
                    "created_at": T0,
                    "updated_at": T0,
                }
                for incident_id in ("INC-AAAA0001", "INC-BBBB0002")
            ],
        )
    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with database.transaction() as session, timeline.recorded_together(session):
            timeline.record(session, "INC-BBBB0002", "alert_received", "b first")
            timeline.record(session, "INC-AAAA0001", "alert_received", "a first", at=T0)
            timeline.record(session, "INC-BBBB0002", "action_refused", "b then", status="warning")
            # Held as rows, not objects the unit of work would insert one by one.
            assert not session.new
            assert not inserts
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
    assert sum(inserts.values()) == 1
    async with database.read() as session:
        rows = (
            await session.execute(
                select(
                    TimelineEvent.incident_id,
                    TimelineEvent.summary,
                    TimelineEvent.status,
                    TimelineEvent.actor,
                    TimelineEvent.at,
                ).order_by(TimelineEvent.id)
            )
        ).all()
    assert [row[:4] for row in rows] == [
        ("INC-BBBB0002", "b first", "info", "opsgate"),
        ("INC-AAAA0001", "a first", "info", "opsgate"),
        ("INC-BBBB0002", "b then", "warning", "opsgate"),
    ]
    assert rows[1].at == T0


async def test_events_recorded_together_are_dropped_with_a_failed_block(
    database: Database,
) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session, timeline.recorded_together(session):
            timeline.record(session, "INC-NONE0001", "alert_received", "never stored")
            raise RuntimeError("the batch failed")
    async with database.transaction() as session:
        # Outside a block an event is an object of the session again.
        timeline.record(session, "INC-NONE0001", "alert_received", "held nowhere")
        assert len(session.new) == 1
        session.expunge_all()
    async with database.read() as session:
        assert (await session.execute(select(TimelineEvent.id))).all() == []
