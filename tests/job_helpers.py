"""Run a job handler as the runner would: on a job row this test holds the lease of."""

from __future__ import annotations

import uuid
from datetime import timedelta

from opsgate.services.job_kinds import JobSpec, P
from opsgate.services.jobs import ClaimedJob, JobStatus, Lease
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Job, utcnow


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
