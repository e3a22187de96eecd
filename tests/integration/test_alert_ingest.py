"""Alertmanager ingest: repeats recognised with a read, new groups written once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import bindparam, func, select, text, update

from opsgate.services.alertmanager import AmPayload
from opsgate.services.cards import build_card
from opsgate.services.incidents import IncidentService, IngestResult, NotStored
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Alert,
    Approval,
    Execution,
    Incident,
    Job,
    TimelineEvent,
    utcnow,
)
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
    # The card, and the plan of the proposed action (read from the cluster, not here).
    assert sorted(jobs) == ["plan", "sync_card"]


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


async def _fire_and_resolve(incidents: IncidentService, group: str = "g1") -> str:
    fired = await incidents.ingest_alertmanager(_payload(alert("fp1"), group=group))
    resolved = await incidents.ingest_alertmanager(
        _payload(alert("fp1", status="resolved"), group=group)
    )
    assert fired.incident_id is not None and resolved.incident_id == fired.incident_id
    return fired.incident_id


async def test_a_group_firing_after_it_resolved_opens_a_linked_incident(
    database: Database,
) -> None:
    _, incidents = services(database)
    first = await _fire_and_resolve(incidents)
    settled = await _counts(database)
    # A resolve sent again, even one that reads differently, leaves the closed incident be.
    for resend in (
        _payload(alert("fp1", status="resolved")),
        _payload(alert("fp1", status="resolved", action=None)),
    ):
        assert await incidents.ingest_alertmanager(resend) == IngestResult(first, False, False)
    assert await _counts(database) == settled

    again = await incidents.ingest_alertmanager(_payload(alert("fp1")))
    assert again.created and again.incident_id not in (None, first)
    # Re-sent while it fires, it is the same incident.
    repeat = await incidents.ingest_alertmanager(_payload(alert("fp1")))
    assert repeat == IngestResult(again.incident_id, False, False)
    async with database.read() as session:
        old = await session.get(Incident, first)
        new = await session.get(Incident, again.incident_id)
        approvals = dict(
            (await session.execute(select(Approval.incident_id, Approval.status))).all()
        )
        old_kinds = list(
            await session.scalars(
                select(TimelineEvent.kind)
                .where(TimelineEvent.incident_id == first)
                .order_by(TimelineEvent.id)
            )
        )
        alerts = (await session.execute(select(Alert.incident_id, Alert.status))).all()
    assert old is not None and new is not None
    assert (old.status, old.generation, old.previous_incident_id) == ("resolved", 1, None)
    assert (new.status, new.generation, new.previous_incident_id) == ("firing", 2, first)
    # The new incident gets a proposal of its own; the old one's was cancelled on resolve.
    assert approvals == {first: "cancelled", new.id: "pending"}
    assert old_kinds[-3:] == ["resolved", "approval_cancelled", "fired_again"]
    assert sorted(alerts) == sorted([(first, "resolved"), (new.id, "firing")])


async def test_payloads_racing_to_refire_a_group_open_one_incident(database: Database) -> None:
    _, incidents = services(database)
    first = await _fire_and_resolve(incidents)
    payloads = [_payload(alert("fp1"), alert(f"fp{i}")) for i in range(2, 7)]
    results = await asyncio.gather(*(incidents.ingest_alertmanager(p) for p in payloads))
    assert sum(r.created for r in results) == 1
    (refired,) = {r.incident_id for r in results}
    assert refired != first
    async with database.read() as session:
        count = await session.scalar(select(func.count()).select_from(Incident))
        new_alerts = await session.scalar(
            select(func.count()).select_from(Alert).where(Alert.incident_id == refired)
        )
    assert count == 2 and new_alerts == 6


async def test_the_card_of_a_refire_counts_the_group_in_its_last_day(database: Database) -> None:
    _, incidents = services(database)
    ids = [await _fire_and_resolve(incidents) for _ in range(3)]
    third = (await incidents.ingest_alertmanager(_payload(alert("fp1")))).incident_id
    async with database.transaction() as session:
        # The group's first incident opened more than a day before its fourth.
        await session.execute(
            update(Incident)
            .where(Incident.id == ids[0])
            .values(created_at=utcnow() - timedelta(hours=25))
        )
    async with database.read() as session:
        incident = await session.get(Incident, third)
        assert incident is not None
        card = await build_card(session, incident)
        other = await session.scalar(select(Incident).where(Incident.group_key != "g1"))
    assert other is None
    assert card.refire is not None
    assert card.refire.previous_incident_id == ids[2]
    assert card.refire.times_in_day == 3
    assert card.refire.seconds_after >= 0


async def test_a_refire_proposes_nothing_while_the_last_fix_still_runs(database: Database) -> None:
    _, incidents = services(database)
    first = await incidents.ingest_alertmanager(_payload(alert("fp1")))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
        assert approval is not None
        approval.status = "approved"
        session.add(
            Execution(
                approval_id=approval.id,
                status="running",
                max_attempts=2,
                retry_delay_seconds=30.0,
                created_at=utcnow(),
            )
        )
    await incidents.ingest_alertmanager(_payload(alert("fp1", status="resolved")))
    again = await incidents.ingest_alertmanager(_payload(alert("fp1")))
    assert again.created and again.incident_id != first.incident_id
    async with database.read() as session:
        proposed = await session.scalar(
            select(func.count())
            .select_from(Approval)
            .where(Approval.incident_id == again.incident_id)
        )
        kinds = list(
            await session.scalars(
                select(TimelineEvent.kind).where(TimelineEvent.incident_id == again.incident_id)
            )
        )
    assert proposed == 0
    assert "proposal_held" in kinds


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
        again = await here.ingest_alertmanager(firing)
        assert again.changed and again.created
        async with database.read() as session:
            incident = await session.get(Incident, again.incident_id)
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


async def test_concurrent_repeats_are_checked_with_shared_reads(database: Database) -> None:
    _, incidents = services(database)
    payload = _payload(alert("fp1"))
    created = await incidents.ingest_alertmanager(payload)
    reads = incidents.stored.reads
    results = await asyncio.gather(*(incidents.ingest_alertmanager(payload) for _ in range(20)))
    assert {(r.incident_id, r.changed) for r in results} == {(created.incident_id, False)}
    # The first reads alone; the others, waiting meanwhile, share the next read.
    assert incidents.stored.reads - reads == 2


async def test_a_check_the_database_cannot_answer_is_not_stored(database: Database) -> None:
    _, incidents = services(database)
    await incidents.ingest_alertmanager(_payload(alert("fp1")))
    async with database.transaction() as session:
        await session.execute(text("ALTER TABLE incidents RENAME TO incidents_gone"))
    # A 503, so Alertmanager sends it again, rather than a 500 or a 200.
    with pytest.raises(NotStored):
        await incidents.ingest_alertmanager(_payload(alert("fp1")))
