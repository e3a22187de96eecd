"""Durable jobs: work that must happen is a row, claimed with a lease, retried until done.

A claim gives the worker a lease token. While the job runs, its runner renews the lease
(a heartbeat); a job is taken over only once its worker stopped renewing (it crashed, or lost
the database), and every write a job makes is fenced by its token: a worker whose lease was
taken over cannot record a result, post a reply or enqueue follow-ups. A job waiting to retry
keeps its due time in the database, so a restart resumes it instead of forgetting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic

import structlog
from sqlalchemy import (
    BindParameter,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.dml import ReturningInsert

from opsgate.services.chat import ChatRetryLater
from opsgate.services.job_kinds import PERIODIC, SPECS, JobKind, JobSpec, P, PeriodicJob
from opsgate.services.storage.db import Database, after_commit, dialect_insert
from opsgate.services.storage.models import Job, utcnow

log = structlog.get_logger(__name__)

MAX_JOB_ATTEMPTS = 12
MAX_BACKOFF_SECONDS = 300.0
DRAIN_SECONDS = 10.0
# Commits that add jobs are announced under this topic and the kind (see jobs_topic).
JOBS_TOPIC = "jobs"
# Claims are serialised across replicas with this PostgreSQL advisory lock (any fixed 64-bit
# number unique to opsgate): under READ COMMITTED two concurrent claims could otherwise each
# see no running job with a serial key and both start one. SQLite's BEGIN IMMEDIATE already
# serialises them.
CLAIM_LOCK_KEY = 0x6F70_7367_6A6F_6231
# The session key of the jobs ``enqueued_together`` holds back until its block ends.
_HELD = "opsgate_jobs_held"
# The values a claim binds into its statement (claimable_jobs).
CLAIM_NOW = "claim_now"
CLAIM_LIMIT = "claim_limit"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


class RetryJob(Exception):
    """Raised by a handler that wants to run again at ``at`` without counting a failure."""

    def __init__(self, at: datetime, reason: str = "") -> None:
        super().__init__(reason or f"retry at {at.isoformat()}")
        self.at = at


class LeaseLost(Exception):
    """This worker no longer holds the job: another one took it over, so it must not write."""


@dataclass(frozen=True)
class Lease:
    """A claimed job's token; its transactions fail once the job was taken over."""

    db: Database
    job_id: int
    token: str

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A database transaction that commits only while this lease is held.

        The job row is locked first, so a takeover cannot slip in between the check and
        the commit.
        """
        async with self.db.transaction() as session:
            await self._check(session)
            yield session

    async def ensure(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still held (before a side effect)."""
        async with self.db.transaction() as session:
            await self._check(session)

    async def _check(self, session: AsyncSession) -> None:
        held = await session.scalar(
            select(Job.id)
            .where(
                Job.id == self.job_id,
                Job.lease_token == self.token,
                Job.status == JobStatus.RUNNING,
            )
            .with_for_update(key_share=True)
        )
        if held is None:
            raise LeaseLost(f"job {self.job_id} was taken over")


@dataclass(frozen=True)
class ClaimedJob(Generic[P]):
    id: int
    kind: JobKind
    key: str
    payload: P
    attempts: int
    lease: Lease


JobHandler = Callable[[ClaimedJob[Any]], Awaitable[None]]


async def enqueue(
    session: AsyncSession, spec: JobSpec[P], payload: P, *, run_at: datetime | None = None
) -> None:
    """Add a job inside the caller's transaction, so it exists exactly when the change does.

    Runners hear of it once the transaction committed (see ``Database.transaction``).
    """
    held: dict[tuple[JobKind, datetime | None], tuple[JobSpec[Any], list[Any]]] | None = (
        session.info.get(_HELD)
    )
    if held is not None:
        held.setdefault((spec.kind, run_at), (spec, []))[1].append(payload)
        return
    if spec.coalesce:
        await enqueue_many(session, spec, [payload], run_at=run_at)
        return
    now = utcnow()
    session.add(Job(**_job_values(spec, payload, run_at or now, now)))
    after_commit(session, jobs_topic(spec.kind))


@contextlib.asynccontextmanager
async def enqueued_together(session: AsyncSession) -> AsyncIterator[None]:
    """Jobs enqueued inside the block are inserted as it ends, one statement per kind.

    For a transaction that enqueues many (a batch of new incidents, each with its plan job):
    coalescing jobs are otherwise one statement each. Inside the block a job is not yet a row,
    so nothing in it may look for the jobs it enqueued.
    """
    held: dict[tuple[JobKind, datetime | None], tuple[JobSpec[Any], list[Any]]] = {}
    session.info[_HELD] = held
    try:
        yield
    finally:
        del session.info[_HELD]
    for (_, run_at), (spec, payloads) in held.items():
        await enqueue_many(session, spec, payloads, run_at=run_at)


async def enqueue_many(
    session: AsyncSession, spec: JobSpec[P], payloads: list[P], *, run_at: datetime | None = None
) -> None:
    """``enqueue`` for several payloads of one kind, in one statement."""
    if not payloads:
        return
    now = utcnow()
    rows = [_job_values(spec, payload, run_at or now, now) for payload in payloads]
    statement = dialect_insert(session, Job)
    if spec.coalesce:
        # One row per key: a statement may not touch one row twice.
        rows = list({row["dedupe_key"]: row for row in reversed(rows)}.values())[::-1]
    if spec.coalesce and session.get_bind().dialect.name == "postgresql":
        # Coalescing locks the waiting job until this transaction ends. With DO NOTHING a
        # runner could claim that job meanwhile (PostgreSQL writers do not queue as SQLite's
        # do) and run it on what it reads before this commit, and no job would follow this
        # change: a card left showing a vote that was already rejected. Locked, the claim
        # skips it until the change is committed.
        locking: ReturningInsert[tuple[bool]] = statement.on_conflict_do_update(
            index_elements=["dedupe_key"], set_={"dedupe_key": statement.excluded.dedupe_key}
        ).returning(literal_column("xmax = 0"))  # true where the row is new
        inserted = (await session.execute(locking, rows)).scalars().all()
        if any(inserted):
            # Only a new job needs the runners woken (see below).
            after_commit(session, jobs_topic(spec.kind))
        return
    if spec.coalesce:
        statement = statement.on_conflict_do_nothing(index_elements=["dedupe_key"])
    if len(rows) > 1:
        await session.execute(statement, rows)
    else:
        added = await session.execute(statement.values(rows[0]))
        if added.rowcount == 0:  # type: ignore[attr-defined]
            # Coalesced into a job that waits already: its own commit woke the runners, and
            # a claim now would only find it. In a burst of votes on one card this is most
            # of them.
            return
    after_commit(session, jobs_topic(spec.kind))


def jobs_topic(kind: JobKind) -> str:
    """What a commit that queued a job of ``kind`` tells: the runners of that kind listen."""
    return f"{JOBS_TOPIC}:{kind.value}"


def _job_values(spec: JobSpec[P], payload: P, run_at: datetime, now: datetime) -> dict[str, Any]:
    key = spec.key(payload)
    return {
        "kind": spec.kind.value,
        "key": key,
        "payload": payload.model_dump(mode="json"),
        "serial_key": spec.serial_key(payload),
        "status": JobStatus.PENDING.value,
        "run_at": run_at,
        "attempts": 0,
        "created_at": now,
        "dedupe_key": f"{spec.kind.value}:{key}" if spec.coalesce else None,
    }


async def is_queued(session: AsyncSession, spec: JobSpec[P], payload: P) -> bool:
    """Whether such a job waits or runs now."""
    found = await session.scalar(
        select(Job.id).where(
            Job.kind == spec.kind.value,
            Job.key == spec.key(payload),
            Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
        )
    )
    return found is not None


@dataclass(frozen=True)
class Periodic:
    """Work to run every ``interval`` seconds, once across all replicas, as a durable job."""

    interval: float
    run: Callable[[], Awaitable[object]]


@dataclass
class _Running:
    job: ClaimedJob[Any]
    task: asyncio.Task[None]
    lost: bool = field(default=False)


def claimable_jobs(kinds: list[str], *, locked: bool = True) -> Select[int]:
    """The ids of due jobs of ``kinds`` a claim may take, locked unless ``locked`` is False: at
    most ``CLAIM_LIMIT``, one per serial key (its earliest due), none whose serial key is busy at
    ``CLAIM_NOW``.

    Built once per runner, the two values bound at each claim: built at every poll, its alias
    and the alias's column proxies were cyclic garbage, which the collector frees only at its
    rare full collections; an idle process grew ~4.5 MB so before it did.
    """
    now: BindParameter[datetime] = bindparam(CLAIM_NOW)
    busy = aliased(Job)
    serial_busy = exists().where(
        busy.serial_key == Job.serial_key,
        busy.id != Job.id,
        busy.status == JobStatus.RUNNING,
        busy.lease_until >= now,
    )
    due = and_(
        Job.kind.in_(kinds),
        or_(
            and_(Job.status == JobStatus.PENDING, Job.run_at <= now),
            and_(Job.status == JobStatus.RUNNING, Job.lease_until < now),
        ),
        ~serial_busy,
    )
    # At most one job per serial key in one claim: the earliest due.
    ranked = (
        select(
            Job.id,
            Job.run_at,
            func.row_number()
            .over(partition_by=Job.serial_key, order_by=(Job.run_at, Job.id))
            .label("rank"),
        )
        .where(due)
        .subquery()
    )
    candidates = (
        select(ranked.c.id)
        .where(ranked.c.rank == 1)
        .order_by(ranked.c.run_at, ranked.c.id)
        .limit(bindparam(CLAIM_LIMIT, type_=Integer))
    )
    claimable = select(Job.id).where(Job.id.in_(candidates))
    return claimable.with_for_update(skip_locked=True, key_share=True) if locked else claimable


class JobRunner:
    """Claims due jobs of its kinds and runs them with bounded concurrency until stopped."""

    def __init__(
        self,
        db: Database,
        handlers: dict[JobKind, JobHandler],
        *,
        owner: str,
        lease_seconds: float,
        poll_interval: float,
        concurrency: int,
        periodic: dict[str, Periodic] | None = None,
        name: str = "jobs",
        on_dead: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._on_dead = on_dead or (lambda _kind: None)
        self._periodic = periodic or {}
        self._handlers = dict(handlers)
        if self._periodic:
            self._handlers[JobKind.PERIODIC] = self._run_periodic
        self._lease = timedelta(seconds=lease_seconds)
        # Three renewals per lease: one missed heartbeat never costs the lease.
        self._heartbeat = lease_seconds / 3
        self._poll = poll_interval
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._running: dict[str, _Running] = {}
        self.owner = owner
        self.name = name
        self._claimable = claimable_jobs(self._kinds)
        self._due = claimable_jobs(self._kinds, locked=False)
        # Only new jobs of its own kinds: a runner woken for another lane's job would spend a
        # claim, a write transaction, on finding nothing.
        for kind in self._handlers:
            db.on_commit(jobs_topic(kind), self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        bound = log.bind(owner=self.owner, runner=self.name)
        await self._take_back_own_jobs()
        await self._ensure_periodic()
        bound.info("job_runner_started")
        heartbeat = asyncio.create_task(self._heartbeat_loop(stop), name=f"{self.name}-heartbeat")
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._claim_and_start()
                except Exception:
                    # The database is away for a moment; jobs wait in it, look again later.
                    bound.warning("job_claim_failed", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
        finally:
            await self._drain()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            bound.info("job_runner_stopped")

    async def _take_back_own_jobs(self) -> None:
        """Jobs this instance held before it restarted are free now: nobody renews them."""
        async with self._db.transaction() as session:
            result = await session.execute(
                update(Job)
                .where(
                    Job.status == JobStatus.RUNNING,
                    Job.lease_owner == self.owner,
                    Job.kind.in_(self._kinds),
                )
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
        taken: int = result.rowcount  # type: ignore[attr-defined]
        if taken:
            log.info("jobs_taken_back", owner=self.owner, count=taken)

    async def _ensure_periodic(self) -> None:
        for task in self._periodic:
            async with self._db.transaction() as session:
                await enqueue(session, PERIODIC, PeriodicJob(task=task))

    async def _run_periodic(self, job: ClaimedJob[PeriodicJob]) -> None:
        task = self._periodic.get(job.payload.task)
        if task is None:
            # Another replica scheduled it (its settings differ); look again later.
            raise RetryJob(utcnow() + timedelta(minutes=5), "not configured here")
        try:
            await task.run()
        except LeaseLost:
            raise
        except Exception:
            log.exception("periodic_task_failed", task=job.payload.task)
        raise RetryJob(utcnow() + timedelta(seconds=task.interval), "next period")

    @property
    def _kinds(self) -> list[str]:
        return [kind.value for kind in self._handlers]

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._heartbeat)
            try:
                await self._renew()
            except Exception:
                # The database is unreachable: the leases run out and others take over,
                # which the fence makes safe; keep trying.
                log.warning("lease_renewal_failed", owner=self.owner, exc_info=True)

    async def _renew(self) -> None:
        tokens = list(self._running)
        if not tokens:
            return
        async with self._db.transaction() as session:
            renewed = set(
                (
                    await session.scalars(
                        update(Job)
                        .where(Job.lease_token.in_(tokens), Job.status == JobStatus.RUNNING)
                        .values(lease_until=utcnow() + self._lease)
                        .returning(Job.lease_token)
                    )
                ).all()
            )
        for token in tokens:
            running = self._running.get(token)
            if token not in renewed and running is not None and not running.task.done():
                # Someone else holds it now; stop working on it rather than race them.
                running.lost = True
                running.task.cancel()
                log.warning("job_lease_lost", job_id=running.job.id, kind=running.job.kind.value)

    async def _drain(self) -> None:
        """Give running jobs a moment to finish; leases cover anything cut short."""
        tasks = [r.task for r in self._running.values()]
        if not tasks:
            return
        _, unfinished = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    async def _claim_and_start(self) -> None:
        free = self._concurrency - len(self._running)
        if free <= 0:
            return
        for job in await self.claim(free):
            task = asyncio.create_task(self._run_one(job), name=f"job-{job.kind}-{job.id}")
            self._running[job.lease.token] = _Running(job, task)
            task.add_done_callback(functools.partial(self._finished, job.lease.token))

    def _finished(self, token: str, task: asyncio.Task[None]) -> None:
        self._running.pop(token, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job_task_crashed", task=task.get_name(), error=repr(task.exception()))
        # A finished job may have freed a serial key others wait on; look promptly.
        self._wake.set()

    async def claim(self, limit: int) -> list[ClaimedJob[Any]]:
        """Claim up to ``limit`` due jobs of this runner's kinds (the runner's loop uses it)."""
        now = utcnow()
        # Most polls find nothing. Looking first in a read keeps them out of the write
        # transaction: on SQLite its lock would hold up a tap's vote behind an empty claim, on
        # PostgreSQL every runner's poll would queue on the claim lock.
        async with self._db.read() as session:
            due = (await session.scalars(self._due, {CLAIM_NOW: now, CLAIM_LIMIT: 1})).first()
        if due is None:
            return []
        token = uuid.uuid4().hex[:16]
        async with self._db.transaction() as session:
            if not self._db.is_sqlite:
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK_KEY}
                )
            claimable = await session.scalars(self._claimable, {CLAIM_NOW: now, CLAIM_LIMIT: limit})
            ids = list(claimable.all())
            if not ids:
                return []
            rows = (
                await session.execute(
                    update(Job)
                    .where(Job.id.in_(ids))
                    .values(
                        status=JobStatus.RUNNING,
                        lease_owner=self.owner,
                        # One token per claim, made unique per job by its id.
                        lease_token=literal(f"{token}-").concat(cast(Job.id, String)),
                        lease_until=now + self._lease,
                        attempts=Job.attempts + 1,
                        # Once claimed, a newer coalescing job may queue behind this one;
                        # a recurring job keeps its key for ever, so it is never doubled.
                        dedupe_key=case(
                            (Job.kind == JobKind.PERIODIC.value, Job.dedupe_key), else_=None
                        ),
                    )
                    .returning(
                        Job.id, Job.kind, Job.key, Job.payload, Job.attempts, Job.lease_token
                    )
                )
            ).all()
        return [self._claimed(row) for row in rows]

    def _claimed(self, row: Any) -> ClaimedJob[Any]:
        kind = JobKind(row.kind)
        return ClaimedJob(
            id=row.id,
            kind=kind,
            key=row.key,
            payload=SPECS[kind].payload.model_validate(row.payload),
            attempts=row.attempts,
            lease=Lease(self._db, row.id, row.lease_token),
        )

    async def _run_one(self, job: ClaimedJob[Any]) -> None:
        # Each job runs in its own task, so what is bound here (and what its handler binds once
        # it knows the incident) stays with this job's log events.
        incident_id = getattr(job.payload, "incident_id", None)
        if incident_id is not None:
            structlog.contextvars.bind_contextvars(incident_id=incident_id)
        handler = self._handlers[job.kind]
        bound = log.bind(job_id=job.id, kind=job.kind.value, key=job.key, attempt=job.attempts)
        try:
            await handler(job)
        except LeaseLost:
            bound.warning("job_lease_lost")
        except RetryJob as exc:
            await self._reschedule(job, exc.at, str(exc), count_failure=False)
            bound.debug("job_rescheduled", run_at=exc.at.isoformat(), reason=str(exc))
        except ChatRetryLater as exc:
            at = utcnow() + timedelta(seconds=exc.retry_after)
            await self._reschedule(job, at, str(exc), count_failure=False)
            bound.info("job_rate_limited", retry_after=exc.retry_after)
        except asyncio.CancelledError:
            running = self._running.get(job.lease.token)
            if running is None or not running.lost:
                # Shutting down mid-job: hand it back now rather than when its lease runs out.
                await asyncio.shield(
                    self._reschedule(job, utcnow(), "interrupted by shutdown", count_failure=False)
                )
            raise
        except Exception as exc:
            await self._fail(job, exc, bound)
        else:
            await self._complete(job)
            bound.debug("job_done")

    async def _fenced_update(self, job: ClaimedJob[Any], **values: Any) -> None:
        async with self._db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_token == job.lease.token)
                .values(lease_until=None, **values)
            )

    async def _complete(self, job: ClaimedJob[Any]) -> None:
        await self._fenced_update(job, status=JobStatus.DONE, finished_at=utcnow())

    async def _reschedule(
        self, job: ClaimedJob[Any], at: datetime, reason: str, *, count_failure: bool
    ) -> None:
        await self._fenced_update(
            job,
            status=JobStatus.PENDING,
            run_at=at,
            last_error=reason[:2000],
            attempts=Job.attempts if count_failure else Job.attempts - 1,
        )

    async def _fail(
        self, job: ClaimedJob[Any], exc: Exception, bound: structlog.BoundLogger
    ) -> None:
        if job.attempts >= MAX_JOB_ATTEMPTS:
            await self._fenced_update(
                job, status=JobStatus.DEAD, finished_at=utcnow(), last_error=repr(exc)[:2000]
            )
            bound.error("job_dead", error=repr(exc))
            self._on_dead(job.kind.value)
            return
        delay = min(2.0**job.attempts, MAX_BACKOFF_SECONDS)
        await self._reschedule(
            job, utcnow() + timedelta(seconds=delay), repr(exc), count_failure=True
        )
        bound.warning("job_failed", error=repr(exc), retry_in=delay, exc_info=exc)


async def queue_depth(session: AsyncSession) -> int:
    query = (
        select(func.count())
        .select_from(Job)
        .where(
            Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
            Job.kind != JobKind.PERIODIC.value,
        )
    )
    return int((await session.scalar(query)) or 0)


@dataclass(frozen=True)
class QueueStats:
    """Per job kind: how many wait or run, and how long the longest-due of them is overdue."""

    depth: dict[str, int]
    oldest_seconds: dict[str, float]


async def queue_stats(session: AsyncSession) -> QueueStats:
    now = utcnow()
    queued = and_(
        Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
        Job.kind != JobKind.PERIODIC.value,
    )
    depth = {
        str(kind): int(count)
        for kind, count in await session.execute(
            select(Job.kind, func.count()).where(queued).group_by(Job.kind)
        )
    }
    # A job waiting for its retry time is not late; one whose time has come is.
    oldest = {
        str(kind): (now - due).total_seconds()
        for kind, due in await session.execute(
            select(Job.kind, func.min(Job.run_at))
            .where(queued, Job.run_at <= now)
            .group_by(Job.kind)
        )
        if due is not None
    }
    return QueueStats(depth, oldest)


async def prune_finished(db: Database, older_than: timedelta) -> int:
    """Forget finished jobs after the retention period; dead ones stay for inspection."""
    async with db.transaction() as session:
        result = await session.execute(
            delete(Job).where(Job.status == JobStatus.DONE, Job.finished_at < utcnow() - older_than)
        )
    pruned: int = result.rowcount  # type: ignore[attr-defined]
    if pruned:
        log.info("jobs_pruned", count=pruned)
    return pruned
