"""Jobs in tests: a handler run on a job row the test holds the lease of, and waiting jobs
brought forward for the running app's runner."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from opsgate.services.job_kinds import JobKind, JobSpec, P
from opsgate.services.jobs import ClaimedJob, JobStatus, Lease
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident, Job, utcnow


async def held_job(db: Database, spec: JobSpec[P], payload: P) -> ClaimedJob[P]:
    """A running job of ``spec`` whose lease the caller holds, as if a runner had claimed it."""
    token = uuid.uuid4().hex
    now = utcnow()
    async with db.transaction() as session:
        row = Job(
            kind=spec.kind.value,
            key=spec.key(payload),
            payload=payload.model_dump(mode="json"),
            serial_key=spec.serial_key(payload),
            status=JobStatus.RUNNING.value,
            run_at=now,
            attempts=1,
            lease_owner="test",
            lease_token=token,
            lease_until=now + timedelta(hours=1),
            last_error="",
            created_at=now,
        )
        session.add(row)
        await session.flush()
        job_id = row.id
    return ClaimedJob(job_id, spec.kind, spec.key(payload), payload, 1, Lease(db, job_id, token))


async def run_waiting_card_jobs(database_url: str, incident_id: str) -> int | None:
    """Bring the incident's waiting card jobs forward, as if their time had come, and wait
    until they ran; the message then bound as its card."""
    db = Database(database_url)
    queued = (
        Job.kind == JobKind.SYNC_CARD.value,
        Job.key == incident_id,
        Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
    )
    waiting = (*queued[:2], Job.status == JobStatus.PENDING.value, Job.run_at > utcnow())
    try:
        for _ in range(200):
            async with db.transaction() as session:
                # Again on each look: a try still running when the test asked may end by
                # scheduling the next one for later.
                await session.execute(update(Job).where(*waiting).values(run_at=utcnow()))
            async with db.transaction() as session:
                if not (await session.scalars(select(Job.id).where(*queued))).all():
                    return await session.scalar(
                        select(Incident.message_id).where(Incident.id == incident_id)
                    )
            await asyncio.sleep(0.05)
    finally:
        await db.dispose()
    raise TimeoutError(f"the card jobs of {incident_id} never ran")
