"""Webhook writes that arrive while a transaction is in flight share the next one."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.alertmanager import AmPayload
from opsgate.services.incidents import IngestResult, NotStored, _Write, ingest_digest
from opsgate.services.job_kinds import JobKind
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Alert, Approval, Incident, Job, TimelineEvent
from opsgate.services.storage.write_batches import WriteBatches, WriteInterrupted
from tests.builders import alert, am_payload
from tests.integration.test_storage import services


def _payload(group: str, *alerts: dict[str, object]) -> AmPayload:
    return AmPayload.model_validate(am_payload(group, *alerts))


async def _until(condition: object, what: str) -> None:
    """Wait for a state, not for a time: the bound is only there to end a broken test."""
    for _ in range(2000):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never reached: {what}")


@asynccontextmanager
async def _writes_held(database: Database) -> AsyncIterator[None]:
    """Holds back every incident insert until the block ends."""
    async with database.transaction() as session:
        if database.is_sqlite:
            # BEGIN IMMEDIATE: the database's write lock, for the whole block.
            await session.execute(text("SELECT 1"))
        else:
            await session.execute(text("LOCK TABLE incidents IN EXCLUSIVE MODE"))
        yield


async def _count(database: Database, model: type[object], *where: object) -> int:
    async with database.read() as session:
        query = select(func.count()).select_from(model)
        for condition in where:
            query = query.where(condition)  # type: ignore[arg-type]
        return int(await session.scalar(query) or 0)


async def test_concurrent_new_groups_are_committed_together_and_stored_whole(
    database: Database,
) -> None:
    _, incidents = services(database)
    groups = [f"g{n:02}" for n in range(30)]
    async with _writes_held(database):
        first = asyncio.create_task(incidents.ingest_alertmanager(_payload(groups[0])))
        await _until(lambda: incidents.writes.writing, "the first in flight")
        rest = [
            asyncio.create_task(incidents.ingest_alertmanager(_payload(g, alert(f"fp-{g}"))))
            for g in groups[1:]
        ]
        await _until(lambda: incidents.writes.waiting == len(rest), "all in line")
    results = [await first, *await asyncio.gather(*rest)]
    assert all(r.created and r.changed for r in results)
    # The first alone (it was in flight), the other 29 in one transaction.
    assert (incidents.writes.batches, incidents.writes.items) == (2, 30)
    n = len(groups)
    assert await _count(database, Incident) == n
    assert await _count(database, Alert) == n
    assert await _count(database, Approval) == n
    assert await _count(database, Job, Job.kind == JobKind.SYNC_CARD.value) == n
    assert await _count(database, Job, Job.kind == JobKind.PLAN.value) == n
    # alert_received and approval_requested for each.
    assert await _count(database, TimelineEvent) == 2 * n
    async with database.read() as session:
        pairs = set((await session.execute(select(Incident.id, Incident.group_key))).all())
    assert pairs == {(r.incident_id, g) for r, g in zip(results, groups, strict=True)}


async def test_a_batch_of_new_groups_inserts_into_each_table_once(database: Database) -> None:
    _, incidents = services(database)
    inserts: Counter[str] = Counter()

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO "):
            inserts[statement.split()[2]] += 1

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with _writes_held(database):
            first = asyncio.create_task(incidents.ingest_alertmanager(_payload("g00")))
            await _until(lambda: incidents.writes.writing, "the first in flight")
            rest = [
                asyncio.create_task(incidents.ingest_alertmanager(_payload(f"g{n:02}")))
                for n in range(1, 20)
            ]
            await _until(lambda: incidents.writes.waiting == len(rest), "all in line")
        await first
        await asyncio.gather(*rest)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
    assert (incidents.writes.batches, incidents.writes.items) == (2, 20)
    # Per transaction one statement per table (two for jobs: plan and card), not one per
    # group, nor per event or job.
    assert dict(inserts) == {
        "incidents": 2,
        "alerts": 2,
        "approvals": 2,
        "timeline_events": 2,
        "jobs": 4,
        "audit_chain": 2,
    }
    assert await _count(database, TimelineEvent) == 40
    async with database.read() as session:
        events = (
            await session.execute(
                select(TimelineEvent.incident_id, TimelineEvent.kind).order_by(TimelineEvent.id)
            )
        ).all()
    # Each incident's events in the order they happened.
    kinds: dict[str, list[str]] = {}
    for incident_id, kind in events:
        kinds.setdefault(incident_id, []).append(kind)
    assert set(map(tuple, kinds.values())) == {("alert_received", "approval_requested")}


async def test_one_batch_keeps_each_groups_own_story(database: Database) -> None:
    """A group twice in a batch, a re-fire after resolve and a new group: as if one by one."""
    _, incidents = services(database)
    resolved_first = await incidents.ingest_alertmanager(_payload("refire", alert("r1")))
    await incidents.ingest_alertmanager(_payload("refire", alert("r1", status="resolved")))
    async with _writes_held(database):
        lead = asyncio.create_task(incidents.ingest_alertmanager(_payload("lead")))
        await _until(lambda: incidents.writes.writing, "the lead in flight")
        batch = [
            incidents.ingest_alertmanager(_payload("twice", alert("t1"))),
            incidents.ingest_alertmanager(_payload("twice", alert("t1"), alert("t2"))),
            incidents.ingest_alertmanager(_payload("refire", alert("r1"))),
            incidents.ingest_alertmanager(_payload("new", alert("n1"))),
        ]
        tasks = []
        for call in batch:
            # One after the other into the line, so "twice" arrives in this order.
            tasks.append(asyncio.create_task(call))
            await _until(lambda: incidents.writes.waiting == len(tasks), "in line")
    await lead
    once, again, refired, new = await asyncio.gather(*tasks)
    assert incidents.writes.batches == 4  # two setup writes, the lead, then the four together
    assert once.created and again == IngestResult(once.incident_id, False, True)
    assert refired.created and refired.incident_id != resolved_first.incident_id
    assert new.created
    async with database.read() as session:
        twice = await session.scalar(select(Incident).where(Incident.group_key == "twice"))
        assert twice is not None and (twice.firing_count, twice.alert_count) == (2, 2)
        generations = (
            await session.execute(
                select(Incident.generation, Incident.previous_incident_id, Incident.status)
                .where(Incident.group_key == "refire")
                .order_by(Incident.generation)
            )
        ).all()
        kinds = set(
            await session.scalars(
                select(TimelineEvent.kind).where(TimelineEvent.incident_id == refired.incident_id)
            )
        )
    assert generations == [
        (1, None, "resolved"),
        (2, resolved_first.incident_id, "firing"),
    ]
    assert {"alert_received", "refired"} <= kinds


# Columns that differ between two writes of the same group whatever path they take: clock
# times, generated keys and the audit chain's links.
_UNEQUAL = {"id", "seq", "at", "created_at", "updated_at", "expires_at", "run_at", "hash"}
_UNEQUAL |= {"prev_hash"}


async def _story(database: Database, group_key: str) -> dict[str, list[dict[str, Any]]]:
    """Every row a group's first payload wrote, as stored (JSON as its text where the driver
    keeps it so: a JSON null is not a SQL NULL), its ids and group key replaced by names."""

    async def rows(sql: str, **params: object) -> list[dict[str, Any]]:
        async with database.read() as session:
            return [dict(r._mapping) for r in await session.execute(text(sql), params)]

    (incident,) = await rows("SELECT * FROM incidents WHERE group_key = :k", k=group_key)
    incident_id = incident["id"]
    approvals = await rows("SELECT * FROM approvals WHERE incident_id = :i", i=incident_id)
    names = {incident_id: "<incident>", group_key: "<group>"}
    names |= {a["id"]: f"<approval {n}>" for n, a in enumerate(approvals)}

    def named(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column, value in row.items():
            if column in _UNEQUAL:
                continue
            if isinstance(value, dict | list):
                value = json.dumps(value, sort_keys=True)
            if isinstance(value, str):
                for stored, name in names.items():
                    value = value.replace(stored, name)
            out[column] = value
        return out

    jobs = [
        job
        for job in await rows("SELECT * FROM jobs ORDER BY id")
        if any(i in f"{job['key']} {job['payload']}" for i in names if i != group_key)
    ]
    story = {
        "incident": [incident],
        "alerts": await rows(
            "SELECT * FROM alerts WHERE incident_id = :i ORDER BY fingerprint", i=incident_id
        ),
        "approvals": approvals,
        "timeline": await rows(
            "SELECT * FROM timeline_events WHERE incident_id = :i ORDER BY id", i=incident_id
        ),
        "audit": await rows(
            "SELECT * FROM audit_chain WHERE incident_id = :i ORDER BY seq", i=incident_id
        ),
        "jobs": jobs,
    }
    return {table: [named(row) for row in found] for table, found in story.items()}


async def test_a_batch_proposes_the_same_approval_and_audit_rows_as_one_group_alone(
    database: Database,
) -> None:
    """A batch writes approvals, incidents and the rest through the table, not one ORM
    object each: every row must be the one the group would have written alone."""
    _, incidents = services(database)
    groups = {
        "declared": [alert("d1", risk="low"), alert("d2")],
        "plain": [alert("p1")],
        "no-action": [alert("n1", action=None)],
        "refused": [alert("r1", action="rm -rf /")],
        "resolved-one": [alert("s1"), alert("s2", status="resolved")],
    }
    for name, alerts in groups.items():
        payload = _payload(f"alone-{name}", *alerts)
        await incidents._write_alone(_Write(payload, ingest_digest(payload.alerts), True))
    async with _writes_held(database):
        lead = asyncio.create_task(incidents.ingest_alertmanager(_payload("lead")))
        await _until(lambda: incidents.writes.writing, "the lead in flight")
        tasks = [
            asyncio.create_task(incidents.ingest_alertmanager(_payload(f"batch-{n}", *a)))
            for n, a in groups.items()
        ]
        await _until(lambda: incidents.writes.waiting == len(tasks), "the batch in line")
    await lead
    assert all(r.created for r in await asyncio.gather(*tasks))
    assert (incidents.writes.batches, incidents.writes.items) == (2, 1 + len(groups))
    for name in groups:
        alone = await _story(database, f"alone-{name}")
        batched = await _story(database, f"batch-{name}")
        assert batched == alone, name
    stories = [await _story(database, f"alone-{name}") for name in groups]
    # The comparison compared something: proposals, a refusal and their records.
    assert [len(s["approvals"]) for s in stories] == [1, 1, 0, 0, 1]
    assert [len(s["audit"]) for s in stories] == [1, 1, 0, 0, 1]
    assert stories[3]["incident"][0]["action_refusal"]


async def refuse_group(database: Database, group_key: str) -> None:
    """The database itself refuses one group's incident, as a constraint would."""
    async with database.transaction() as session:
        if database.is_sqlite:
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON incidents "
                    f"WHEN NEW.group_key = '{group_key}' "
                    "BEGIN SELECT RAISE(ABORT, 'this group is refused'); END"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.group_key = '{group_key}' THEN "
                    "RAISE EXCEPTION 'this group is refused'; END IF; RETURN NEW; END "
                    "$$ LANGUAGE plpgsql"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON incidents "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_one()"
                )
            )


async def test_a_group_the_database_refuses_fails_alone(database: Database) -> None:
    _, incidents = services(database)
    await refuse_group(database, "bad")
    groups = ["a", "b", "bad", "c", "d"]
    async with _writes_held(database):
        lead = asyncio.create_task(incidents.ingest_alertmanager(_payload("lead")))
        await _until(lambda: incidents.writes.writing, "the lead in flight")
        tasks = [asyncio.create_task(incidents.ingest_alertmanager(_payload(g))) for g in groups]
        await _until(lambda: incidents.writes.waiting == len(tasks), "the batch in line")
    await lead
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    refused = outcomes[groups.index("bad")]
    assert isinstance(refused, NotStored) and "this group is refused" in str(refused)
    for group, outcome in zip(groups, outcomes, strict=True):
        if group != "bad":
            assert isinstance(outcome, IngestResult) and outcome.created, (group, outcome)
    async with database.read() as session:
        stored = set(await session.scalars(select(Incident.group_key)))
        approvals = await session.scalar(select(func.count()).select_from(Approval))
    assert stored == {"lead", "a", "b", "c", "d"}
    assert approvals == 5


class _Gate:
    """A write_all that holds its first transaction open until released."""

    def __init__(self, *, hold_the_second: bool = False) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.hold_the_second = hold_the_second
        self.batches: list[list[int]] = []

    async def write_all(self, session: AsyncSession, items: Sequence[int]) -> list[int]:
        await session.execute(text("SELECT 1"))
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            await self.release.wait()
        elif self.hold_the_second:
            await asyncio.Event().wait()  # until cancelled
        return [item * 10 for item in items]

    async def alone(self, item: int) -> int:
        return item * 10


async def test_callers_in_line_are_answered_when_the_writing_caller_is_cancelled(
    database: Database,
) -> None:
    """What was in line is either written or refused, never left waiting: the cancelled
    transaction committed nothing, so nobody is told it did."""
    gate = _Gate()
    writes: WriteBatches[int, int] = WriteBatches(database, gate.write_all, gate.alone)
    leader = asyncio.create_task(writes.submit(1))
    await gate.entered.wait()
    followers = [asyncio.create_task(writes.submit(n)) for n in (2, 3)]
    await _until(lambda: writes.waiting == 2, "followers in line")
    # The second batch (2 and 3) is now being written by follower 2, which leads next.
    gate.release.set()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await asyncio.gather(*followers) == [20, 30]
    assert gate.batches == [[1], [2, 3]]
    # And the line still moves.
    assert await writes.submit(4) == 40


async def test_a_cancelled_transaction_refuses_the_callers_that_shared_it(
    database: Database,
) -> None:
    gate = _Gate(hold_the_second=True)
    writes: WriteBatches[int, int] = WriteBatches(database, gate.write_all, gate.alone)
    first = asyncio.create_task(writes.submit(1))
    await gate.entered.wait()
    # 2 leads the second transaction, 3 shares it.
    second = asyncio.create_task(writes.submit(2))
    third = asyncio.create_task(writes.submit(3))
    await _until(lambda: writes.waiting == 2, "two in line")
    gate.release.set()
    assert await first == 10
    await _until(lambda: len(gate.batches) == 2, "the second transaction open")
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    with pytest.raises(WriteInterrupted):
        await third
    assert gate.batches == [[1], [2, 3]]
    assert (writes.waiting, writes.writing) == (0, False)


async def test_a_caller_that_gave_up_in_line_does_not_stall_it(database: Database) -> None:
    gate = _Gate()
    writes: WriteBatches[int, int] = WriteBatches(database, gate.write_all, gate.alone)
    leader = asyncio.create_task(writes.submit(1))
    await gate.entered.wait()
    gone = asyncio.create_task(writes.submit(2))
    stays = asyncio.create_task(writes.submit(3))
    await _until(lambda: writes.waiting == 2, "two in line")
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    gate.release.set()
    assert await leader == 10
    assert await stays == 30


async def test_a_failed_shared_transaction_retries_each_write_alone(database: Database) -> None:
    gate = _Gate()
    calls: list[int] = []

    async def failing(session: AsyncSession, items: Sequence[int]) -> list[int]:
        if len(items) > 1:
            raise RuntimeError("one of them is bad")
        return await gate.write_all(session, items)

    async def alone(item: int) -> int:
        calls.append(item)
        if item == 3:
            raise ValueError("3 is refused")
        return item * 10

    writes: WriteBatches[int, int] = WriteBatches(database, failing, alone)
    leader = asyncio.create_task(writes.submit(1))
    await gate.entered.wait()
    others = [asyncio.create_task(writes.submit(n)) for n in (2, 3, 4)]
    await _until(lambda: writes.waiting == 3, "three in line")
    gate.release.set()
    assert await leader == 10
    outcomes = await asyncio.gather(*others, return_exceptions=True)
    assert outcomes[0] == 20 and outcomes[2] == 40
    assert isinstance(outcomes[1], ValueError)
    assert calls == [2, 3, 4]


async def test_a_resend_that_changes_nothing_leaves_no_info_line(database: Database) -> None:
    _, incidents = services(database)
    payload = _payload("quiet")
    with structlog.testing.capture_logs() as logs:
        first = await incidents.ingest_alertmanager(payload)
        repeat = await incidents.ingest_alertmanager(payload)
    assert first.created and not repeat.changed
    lines = [e for e in logs if e["event"] == "alertmanager_ingested"]
    assert [(e["log_level"], e["created"]) for e in lines] == [("info", True)]
