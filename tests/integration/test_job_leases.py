"""Leases that a live worker keeps, and writes fenced by them (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta

from sqlalchemy import event, select, update

from opsgate.services import timeline
from opsgate.services.job_kinds import SYNC_CARD, IncidentJob, JobKind
from opsgate.services.jobs import (
    ClaimedJob,
    JobRunner,
    JobStatus,
    Periodic,
    enqueue,
    prune_finished,
)
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident, Job, TimelineEvent, utcnow


def runner(db: Database, owner: str, handler: object, lease: float = 1.0) -> JobRunner:
    return JobRunner(
        db,
        {JobKind.SYNC_CARD: handler},  # type: ignore[dict-item]
        owner=owner,
        lease_seconds=lease,
        poll_interval=0.05,
        concurrency=2,
    )


async def _incident(db: Database, incident_id: str) -> None:
    now = utcnow()
    async with db.transaction() as session:
        session.add(
            Incident(
                id=incident_id,
                group_key=incident_id,
                source="test",
                status="firing",
                chat_id=-1,
                created_at=now,
                updated_at=now,
            )
        )
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident_id))


async def test_a_job_running_past_its_lease_is_not_taken_from_its_live_worker(
    database: Database,
) -> None:
    await _incident(database, "INC-LONG")
    starts: list[str] = []

    def handler_for(owner: str) -> object:
        async def handler(job: ClaimedJob[IncidentJob]) -> None:
            starts.append(owner)
            # Three leases long: only the heartbeat keeps the job this worker's.
            await asyncio.sleep(3.0)
            async with job.lease.transaction() as session:
                timeline.record(session, job.payload.incident_id, "card_posted", owner)

        return handler

    stop = asyncio.Event()
    runners = [runner(database, name, handler_for(name)) for name in ("a", "b")]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        for _ in range(200):
            async with database.transaction() as session:
                status = await session.scalar(select(Job.status).where(Job.key == "INC-LONG"))
            if status == JobStatus.DONE:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert status == JobStatus.DONE
    assert len(starts) == 1
    async with database.transaction() as session:
        events = list(await session.scalars(select(TimelineEvent.summary)))
    assert events == starts


async def test_a_worker_whose_job_was_taken_over_cannot_write(database: Database) -> None:
    await _incident(database, "INC-LOST")
    first_started = asyncio.Event()
    first_may_write = asyncio.Event()
    outcomes: dict[str, str] = {}

    async def slow(job: ClaimedJob[IncidentJob]) -> None:
        first_started.set()
        await first_may_write.wait()
        try:
            async with job.lease.transaction() as session:
                timeline.record(session, job.payload.incident_id, "card_posted", "first")
            outcomes["first"] = "wrote"
        except asyncio.CancelledError:
            outcomes["first"] = "cancelled"
            raise

    async def quick(job: ClaimedJob[IncidentJob]) -> None:
        async with job.lease.transaction() as session:
            timeline.record(session, job.payload.incident_id, "card_posted", "second")
        outcomes["second"] = "wrote"

    stop = asyncio.Event()
    first = runner(database, "first", slow, lease=30)
    first_task = asyncio.create_task(first.run(stop))
    await asyncio.wait_for(first_started.wait(), 10)
    # The first worker's renewals stop reaching the database (a partition, a long pause):
    # its lease runs out and another worker takes the job over.
    async with database.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.key == "INC-LOST")
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    second = runner(database, "second", quick, lease=30)
    [taken] = await second.claim(1)
    await quick(taken)
    first_may_write.set()
    await asyncio.sleep(0.3)
    stop.set()
    await first_task

    async with database.transaction() as session:
        events = list(await session.scalars(select(TimelineEvent.summary)))
        row = await session.scalar(select(Job).where(Job.key == "INC-LOST"))
    assert events == ["second"]
    assert outcomes == {"second": "wrote"} or outcomes.get("first") == "cancelled"
    # The first worker's shutdown did not hand back a job that is no longer its own.
    assert row is not None and row.lease_owner == "second" and row.status == JobStatus.RUNNING


async def test_jobs_of_one_serial_key_never_run_side_by_side_across_runners(
    database: Database,
) -> None:
    await _incident(database, "INC-SERIAL")
    async with database.transaction() as session:
        # One card: publish jobs and edits share its serial key but do not coalesce.
        for _ in range(15):
            session.add(
                Job(
                    kind=JobKind.SYNC_CARD.value,
                    key="INC-SERIAL",
                    payload={"incident_id": "INC-SERIAL"},
                    serial_key="card:INC-SERIAL",
                    status=JobStatus.PENDING.value,
                    run_at=utcnow(),
                    attempts=0,
                    last_error="",
                    created_at=utcnow(),
                )
            )
    running = 0
    most = 0
    done = 0

    async def handler(job: ClaimedJob[IncidentJob]) -> None:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        done += 1

    stop = asyncio.Event()
    runners = [runner(database, f"r{n}", handler, lease=30) for n in range(3)]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        for _ in range(400):
            if done >= 16:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert done == 16
    assert most == 1


async def test_periodic_work_runs_once_across_runners_and_finished_jobs_are_pruned(
    database: Database,
) -> None:
    runs = 0

    async def tick() -> None:
        nonlocal runs
        runs += 1

    stop = asyncio.Event()
    runners = [
        JobRunner(
            database,
            {},
            owner=f"p{n}",
            lease_seconds=30,
            poll_interval=0.05,
            concurrency=2,
            periodic={"tick": Periodic(3600, tick)},
        )
        for n in range(2)
    ]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    for _ in range(100):
        if runs:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    async with database.transaction() as session:
        periodic = list(await session.scalars(select(Job).where(Job.kind == "periodic")))
    # One row for the task, whoever started first; it ran once and waits for its next period.
    assert runs == 1
    assert len(periodic) == 1 and periodic[0].status == JobStatus.PENDING
    assert periodic[0].run_at > utcnow() + timedelta(minutes=50)

    await _incident(database, "INC-OLD")
    async with database.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.key == "INC-OLD")
            .values(status=JobStatus.DONE, finished_at=utcnow() - timedelta(days=8))
        )
    assert await prune_finished(database, timedelta(days=7)) == 1
    async with database.transaction() as session:
        left = list(await session.scalars(select(Job.kind)))
    assert left == ["periodic"]


async def test_polls_that_find_nothing_leave_no_cyclic_garbage(database: Database) -> None:
    """An idle runner polls for ever: garbage in cycles waits for the collector's rare full
    collections, and an idle process grew by MBs so."""

    async def handler(job: ClaimedJob[IncidentJob]) -> None:
        raise AssertionError("nothing is due")

    polls = runner(database, "idle", handler)
    await polls.claim(5)  # the first compiles the statement
    gc.collect()
    for _ in range(20):
        assert await polls.claim(5) == []
    assert gc.collect() < 20 * 10


async def test_an_idle_runners_polls_take_no_write_transaction(database: Database) -> None:
    """Write transactions (SQLite's BEGIN IMMEDIATE, PostgreSQL's claim lock) only when a job
    is due: an empty poll would hold up a tap's vote for nothing."""
    writes: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("BEGIN IMMEDIATE") or "pg_advisory_xact_lock" in statement:
            writes.append(statement)

    ran: list[str] = []

    async def handler(job: ClaimedJob[IncidentJob]) -> None:
        ran.append(job.payload.incident_id)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    worker = runner(database, "idle", handler)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.3)  # the runner's start-up writes
        writes.clear()
        await asyncio.sleep(0.5)  # about ten polls with nothing due
        assert writes == []
        await _incident(database, "INC-IDLE")
        for _ in range(100):
            if ran:
                break
            await asyncio.sleep(0.02)
        assert ran == ["INC-IDLE"], "a due job is still claimed"
    finally:
        stop.set()
        await task
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)


async def test_a_job_coalesced_into_is_not_claimed_before_the_change_commits(
    database: Database,
) -> None:
    """A card job that a vote coalesces into must run on the vote's state: were it claimed
    while the vote's transaction is still open, it would draw the card without the vote and
    no job would follow."""
    await _incident(database, "INC-RACE")  # its card job waits
    worker = runner(database, "racer", None)
    async with database.transaction() as vote:
        await enqueue(vote, SYNC_CARD, IncidentJob(incident_id="INC-RACE"))
        if not database.is_sqlite:  # SQLite's writers queue: a claim waits for the commit
            assert await worker.claim(5) == [], "claimed before the change was committed"
    claimed = await worker.claim(5)
    assert [job.payload.incident_id for job in claimed] == ["INC-RACE"]
    async with database.read() as session:
        jobs = list(await session.scalars(select(Job).where(Job.kind == JobKind.SYNC_CARD.value)))
    assert len(jobs) == 1, "the vote coalesced into the waiting job"
