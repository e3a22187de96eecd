"""Durable jobs: work that must happen is a row, claimed with a lease, retried until done.

A job lost to a crash is picked up again when its lease runs out; a job waiting to retry
keeps its due time in the database, so a restart resumes it instead of forgetting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from opsgate.services.chat import ChatRetryLater
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Job, utcnow

log = structlog.get_logger(__name__)

MAX_JOB_ATTEMPTS = 12
MAX_BACKOFF_SECONDS = 300.0
DRAIN_SECONDS = 10.0


class JobKind(StrEnum):
    EXECUTE = "execute"
    SYNC_CARD = "sync_card"
    PUBLISH_RESULT = "publish_result"
    NOTIFY = "notify"
    VERIFY = "verify"
    LEARN = "learn"
    KNOWLEDGE = "knowledge"
    EXTRACT_PLAYBOOK = "extract_playbook"


class RetryJob(Exception):
    """Raised by a handler that wants to run again at ``at`` without counting a failure."""

    def __init__(self, at: datetime, reason: str = "") -> None:
        super().__init__(reason or f"retry at {at.isoformat()}")
        self.at = at


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: JobKind
    ref: str
    attempts: int


JobHandler = Callable[[ClaimedJob], Awaitable[None]]


async def enqueue(
    session: AsyncSession,
    kind: JobKind,
    ref: str,
    *,
    run_at: datetime | None = None,
    coalesce: bool = False,
    serial_key: str | None = None,
) -> None:
    """Add a job inside the caller's transaction, so it exists exactly when the change does.

    ``coalesce`` keeps at most one waiting job per (kind, ref): a burst of card updates
    becomes one edit that renders the latest state. Jobs with the same ``serial_key``
    (default: ``ref``) run one after another, so two renders of one card never race and an
    older state is never written over a newer one.
    """
    now = utcnow()
    values = {
        "kind": kind.value,
        "ref": ref,
        "serial_key": serial_key or ref,
        "status": "pending",
        "run_at": run_at or now,
        "attempts": 0,
        "created_at": now,
        "dedupe_key": f"{kind.value}:{ref}" if coalesce else None,
    }
    dialect = session.get_bind().dialect.name
    if coalesce and dialect in ("sqlite", "postgresql"):
        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(Job)
        await session.execute(
            insert.values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
    else:
        session.add(Job(**values))


# Learning updates shared counters; one at a time keeps them exact without row-lock races.
LEARNING_SERIAL = "learning"


def learn_ref(approval_id: str, event: str) -> str:
    return f"{approval_id}|{event}"


async def enqueue_learning(session: AsyncSession, approval_id: str, event: str) -> None:
    await enqueue(session, JobKind.LEARN, learn_ref(approval_id, event), serial_key=LEARNING_SERIAL)


class JobRunner:
    """Claims due jobs and runs them with bounded concurrency until stopped."""

    def __init__(
        self,
        db: Database,
        handlers: dict[JobKind, JobHandler],
        *,
        lease_seconds: float,
        poll_interval: float,
        concurrency: int,
        periodic: list[tuple[float, Callable[[], Awaitable[object]]]] | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._db = db
        self._handlers = handlers
        self._lease = timedelta(seconds=lease_seconds)
        self._poll = poll_interval
        self._concurrency = concurrency
        self._periodic = periodic or []
        self._wake = wake or asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"

    def wake(self) -> None:
        """Look for due jobs now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("job_runner_started", owner=self.owner)
        # Every periodic task runs once at start, then every interval.
        last_periodic = [float("-inf")] * len(self._periodic)
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                self._wake.clear()
                for i, (interval, func) in enumerate(self._periodic):
                    if loop.time() - last_periodic[i] >= interval:
                        last_periodic[i] = loop.time()
                        await self._guarded(func)
                await self._claim_and_start()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
        finally:
            await self._drain()
            log.info("job_runner_stopped", owner=self.owner)

    async def _guarded(self, func: Callable[[], Awaitable[object]]) -> None:
        try:
            await func()
        except Exception:
            log.exception("periodic_task_failed", task=getattr(func, "__name__", repr(func)))

    async def _drain(self) -> None:
        """Give running jobs a moment to finish; leases cover anything cut short."""
        if not self._running:
            return
        _, unfinished = await asyncio.wait(set(self._running), timeout=DRAIN_SECONDS)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    async def _claim_and_start(self) -> None:
        free = self._concurrency - len(self._running)
        if free <= 0:
            return
        for job in await self._claim(free):
            task = asyncio.create_task(self._run_one(job), name=f"job-{job.kind}-{job.id}")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("job_task_crashed", task=task.get_name(), error=repr(task.exception()))
        # A finished job may have enqueued follow-ups; look for them promptly.
        self._wake.set()

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        now = utcnow()
        busy = aliased(Job)
        serial_free = ~exists().where(
            busy.serial_key == Job.serial_key,
            busy.id != Job.id,
            busy.status == "running",
            busy.lease_until >= now,
        )
        due = and_(
            or_(
                and_(Job.status == "pending", Job.run_at <= now),
                and_(Job.status == "running", Job.lease_until < now),
            ),
            serial_free,
        )
        async with self._db.transaction() as session:
            rows = (
                await session.execute(
                    select(Job.id, Job.kind, Job.ref, Job.attempts)
                    .where(due)
                    .order_by(Job.run_at, Job.id)
                    .limit(limit)
                )
            ).all()
        claimed = []
        for row in rows:
            async with self._db.transaction() as session:
                result = await session.execute(
                    update(Job)
                    .where(Job.id == row.id, due)
                    .values(
                        status="running",
                        lease_owner=self.owner,
                        lease_until=now + self._lease,
                        attempts=Job.attempts + 1,
                        # Once claimed, a newer coalescing job may queue behind this one.
                        dedupe_key=None,
                    )
                )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(ClaimedJob(row.id, JobKind(row.kind), row.ref, row.attempts + 1))
        return claimed

    async def _run_one(self, job: ClaimedJob) -> None:
        handler = self._handlers[job.kind]
        bound = log.bind(job_id=job.id, kind=job.kind.value, ref=job.ref, attempt=job.attempts)
        try:
            await handler(job)
        except RetryJob as exc:
            await self._reschedule(job, exc.at, str(exc), count_failure=False)
            bound.info("job_rescheduled", run_at=exc.at.isoformat(), reason=str(exc))
        except ChatRetryLater as exc:
            at = utcnow() + timedelta(seconds=exc.retry_after)
            await self._reschedule(job, at, str(exc), count_failure=False)
            bound.warning("job_rate_limited", retry_after=exc.retry_after)
        except asyncio.CancelledError:
            # Shutting down mid-job: hand the job back now rather than when its lease runs out.
            await asyncio.shield(
                self._reschedule(job, utcnow(), "interrupted by shutdown", count_failure=False)
            )
            raise
        except Exception as exc:
            await self._fail(job, exc, bound)
        else:
            await self._complete(job)
            bound.debug("job_done")

    async def _complete(self, job: ClaimedJob) -> None:
        async with self._db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_owner == self.owner)
                .values(status="done", finished_at=utcnow(), lease_until=None)
            )

    async def _reschedule(
        self, job: ClaimedJob, at: datetime, reason: str, *, count_failure: bool
    ) -> None:
        attempts = Job.attempts if count_failure else Job.attempts - 1
        async with self._db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_owner == self.owner)
                .values(
                    status="pending",
                    run_at=at,
                    lease_until=None,
                    last_error=reason[:2000],
                    attempts=attempts,
                )
            )

    async def _fail(self, job: ClaimedJob, exc: Exception, bound: structlog.BoundLogger) -> None:
        if job.attempts >= MAX_JOB_ATTEMPTS:
            async with self._db.transaction() as session:
                await session.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.lease_owner == self.owner)
                    .values(status="dead", finished_at=utcnow(), last_error=repr(exc)[:2000])
                )
            bound.error("job_dead", error=repr(exc))
            return
        delay = min(2.0**job.attempts, MAX_BACKOFF_SECONDS)
        await self._reschedule(
            job, utcnow() + timedelta(seconds=delay), repr(exc), count_failure=True
        )
        bound.warning("job_failed", error=repr(exc), retry_in=delay, exc_info=exc)


async def queue_depth(session: AsyncSession) -> int:
    query = select(func.count()).select_from(Job).where(Job.status.in_(("pending", "running")))
    return int((await session.execute(query)).scalar_one())
