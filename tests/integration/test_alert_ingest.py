"""Alertmanager ingest: repeats recognised with a read, new groups written once."""

from __future__ import annotations

import asyncio

from sqlalchemy import bindparam, func, select, update

from opsgate.services.alertmanager import AmPayload
from opsgate.services.incidents import IngestResult
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Alert, Approval, Incident, Job, TimelineEvent
from tests.builders import alert, am_payload
from tests.integration.test_storage import services


def _payload(*alerts: dict[str, object], group: str = "g1") -> AmPayload:
    return AmPayload.model_validate(am_payload(group, *alerts))


async def _counts(database: Database) -> tuple[int, int, int]:
    async with database.read() as session:
        events = await session.scalar(select(func.count()).select_from(TimelineEvent))
        jobs = await session.scalar(select(func.count()).select_from(Job))
        approvals = await session.scalar(select(func.count()).select_from(Approval))
    return events or 0, jobs or 0, approvals or 0


async def test_a_repeat_is_answered_while_a_writer_holds_the_incident(database: Database) -> None:
    _, incidents = services(database)
    payload = _payload(alert("fp1"), alert("fp2"))
    first = await incidents.ingest_alertmanager(payload)
    async with database.transaction() as session:
        # Holds the row (PostgreSQL) and the database's write lock (SQLite) until the end
        # of the block: a repeat that needed either would wait here for the busy timeout.
        await session.scalar(select(Incident).with_for_update())
        repeat = await asyncio.wait_for(incidents.ingest_alertmanager(payload), 10)
    assert repeat == IngestResult(first.incident_id, created=False, changed=False)


async def test_what_changes_is_written_and_only_a_true_repeat_is_skipped(
    database: Database,
) -> None:
    _, incidents = services(database)
    a = _payload(alert("fp1"), alert("fp2"))
    b = _payload(alert("fp1"), alert("fp2", status="resolved"))
    assert (await incidents.ingest_alertmanager(a)).created
    assert not (await incidents.ingest_alertmanager(a)).changed
    assert (await incidents.ingest_alertmanager(b)).changed
    assert not (await incidents.ingest_alertmanager(b)).changed
    # Back to the first payload: fp2 fires again, which is a change, not a repeat.
    assert (await incidents.ingest_alertmanager(a)).changed
    settled = await _counts(database)
    assert not (await incidents.ingest_alertmanager(a)).changed
    # The same alerts in another order write the same rows.
    reordered = _payload(alert("fp2"), alert("fp1"))
    assert not (await incidents.ingest_alertmanager(reordered)).changed
    assert await _counts(database) == settled
    async with database.read() as session:
        incident = await session.scalar(select(Incident))
        statuses = dict((await session.execute(select(Alert.fingerprint, Alert.status))).all())
    assert incident is not None
    assert (incident.firing_count, incident.alert_count) == (2, 2)
    assert statuses == {"fp1": "firing", "fp2": "firing"}


async def test_an_incident_without_a_digest_is_checked_once_the_long_way(
    database: Database,
) -> None:
    """Incidents from before the digest column: their next payload takes the write path."""
    _, incidents = services(database)
    payload = _payload(alert("fp1"))
    first = await incidents.ingest_alertmanager(payload)
    async with database.transaction() as session:
        await session.execute(update(Incident).values(ingest_digest=None))
    before = await _counts(database)
    again = await incidents.ingest_alertmanager(payload)
    assert again == IngestResult(first.incident_id, created=False, changed=False)
    assert await _counts(database) == before
    async with database.read() as session:
        digest = await session.scalar(select(Incident.ingest_digest))
    assert digest is not None


async def test_a_new_group_is_written_whole(database: Database) -> None:
    _, incidents = services(database)
    payload = _payload(
        alert("fp1"), alert("fp2"), alert("fp3", status="resolved"), alert("fp1", action=None)
    )
    result = await incidents.ingest_alertmanager(payload)
    assert result.created and result.changed
    async with database.read() as session:
        incident = await session.scalar(select(Incident))
        rows = {a.fingerprint: a for a in await session.scalars(select(Alert))}
        kinds = list(await session.scalars(select(TimelineEvent.kind).order_by(TimelineEvent.id)))
        approval = await session.scalar(select(Approval))
        jobs = list(await session.scalars(select(Job.kind)))
    assert incident is not None and incident.status == "firing"
    assert (incident.firing_count, incident.alert_count) == (2, 3)
    assert incident.proposed_action and incident.summary == "checkout 5xx above 5%"
    assert sorted(rows) == ["fp1", "fp2", "fp3"]
    # Of two alerts with one fingerprint the later is stored, as an upsert in turn would.
    assert "opsgate_action" not in rows["fp1"].annotations
    assert rows["fp3"].ends_at is not None and rows["fp1"].ends_at is None
    assert rows["fp2"].starts_at is not None and rows["fp2"].generator_url
    assert kinds == ["alert_received", "approval_requested"]
    assert approval is not None and approval.incident_id == incident.id
    assert jobs == ["sync_card"]


async def test_a_resolve_for_an_unknown_group_stores_nothing(database: Database) -> None:
    _, incidents = services(database)
    result = await incidents.ingest_alertmanager(_payload(alert("fp1", status="resolved")))
    assert result == IngestResult(None, created=False, changed=False)
    async with database.read() as session:
        assert await session.scalar(select(func.count()).select_from(Incident)) == 0
    assert await _counts(database) == (0, 0, 0)


async def test_first_payloads_of_one_group_racing_make_one_incident(database: Database) -> None:
    _, incidents = services(database)
    payloads = [_payload(alert(f"fp{i}"), alert("shared")) for i in range(6)]
    results = await asyncio.gather(*(incidents.ingest_alertmanager(p) for p in payloads))
    assert sum(r.created for r in results) == 1
    assert len({r.incident_id for r in results}) == 1
    async with database.read() as session:
        incidents_stored = await session.scalar(select(func.count()).select_from(Incident))
        alerts = sorted(await session.scalars(select(Alert.fingerprint)))
        received = await session.scalar(
            select(func.count())
            .select_from(TimelineEvent)
            .where(TimelineEvent.kind == "alert_received")
        )
        approvals = await session.scalar(select(func.count()).select_from(Approval))
    assert incidents_stored == 1
    assert alerts == sorted([*(f"fp{i}" for i in range(6)), "shared"])
    assert received == 1 and approvals == 1


async def test_read_sessions_keep_nothing(database: Database) -> None:
    _, incidents = services(database)
    await incidents.ingest_alertmanager(_payload(alert("fp1")))
    async with database.read() as session:
        await session.execute(update(Incident).values(summary="written in a read"))
    async with database.read() as session:
        assert await session.scalar(select(Incident.summary)) == "checkout 5xx above 5%"


async def test_a_repeat_after_another_replica_wrote_the_group_is_written(
    database: Database,
) -> None:
    # Two replicas on one database: what one remembers of a group must not hide what the
    # other wrote since, so the same payload again is a change on the first one.
    other_db = Database(database.url)
    try:
        _, here = services(database)
        _, there = services(other_db)
        firing = _payload(alert("fp1"))
        resolved = _payload(alert("fp1", status="resolved"))
        assert (await here.ingest_alertmanager(firing)).created
        assert not (await here.ingest_alertmanager(firing)).changed
        assert (await there.ingest_alertmanager(resolved)).changed
        assert (await here.ingest_alertmanager(firing)).changed
        async with database.read() as session:
            incident = await session.scalar(select(Incident))
            kinds = list(await session.scalars(select(TimelineEvent.kind)))
        assert incident is not None and incident.status == "firing"
        assert kinds.count("resolved") == 1 and kinds.count("refired") == 1
    finally:
        await other_db.dispose()


async def test_read_row_reads_one_row_by_its_parameters(database: Database) -> None:
    _, incidents = services(database)
    created = await incidents.ingest_alertmanager(_payload(alert("fp1"), alert("fp2")))
    statement = select(Incident.id, Incident.status, Incident.firing_count).where(
        Incident.group_key == bindparam("group_key")
    )
    assert await database.read_row(statement, group_key="g1") == (
        created.incident_id,
        "firing",
        2,
    )
    assert await database.read_row(statement, group_key="g2") is None
