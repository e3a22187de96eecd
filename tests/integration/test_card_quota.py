"""The chat's card quota: beyond it incidents are listed on the digest, and a freed slot goes
to the most severe waiting incident, whichever asks first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from opsgate.services.alertmanager import AmPayload
from opsgate.services.card_quota import RECHECK, WINDOW, CardQuota
from opsgate.services.cards import CardPublisher
from opsgate.services.incidents import IncidentService
from opsgate.services.job_kinds import SYNC_CARD, IncidentJob, JobKind
from opsgate.services.jobs import JobStatus, RetryJob
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import DigestLine, Incident, Job, utcnow
from tests.builders import alert, am_payload
from tests.integration.publisher_wiring import wired_publisher
from tests.integration.test_tap_binding import CHAT, incident_service
from tests.job_helpers import held_job

QUOTA = CardQuota(cards_per_minute=1)


@pytest.fixture
def incidents(database: Database) -> IncidentService:
    return incident_service(database)[1]


async def ingest(incidents: IncidentService, name: str, severity: str) -> str:
    payload = am_payload(
        f'{{}}:{{alertname="{name}"}}',
        alert(name, alertname=name, extra_labels={"severity": severity}),
    )
    result = await incidents.ingest_alertmanager(AmPayload.model_validate(payload))
    assert result.incident_id is not None
    return result.incident_id


async def ask(db: Database, quota: CardQuota, incident_id: str, now: datetime) -> datetime | None:
    async with db.transaction() as session:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        return await quota.take_slot(session, incident, now)


async def digest_state(database: Database) -> tuple[set[str], list[int]]:
    """The incidents listed on a digest, and the digest jobs queued."""
    async with database.transaction() as session:
        listed = set((await session.scalars(select(DigestLine.incident_id))).all())
        jobs = (await session.scalars(select(Job.id).where(Job.kind == JobKind.DIGEST.value))).all()
    return listed, list(jobs)


async def test_a_freed_slot_goes_to_the_most_severe_waiting_card(
    database: Database, incidents: IncidentService
) -> None:
    t0 = utcnow()
    first = await ingest(incidents, "First", "info")
    assert await ask(database, QUOTA, first, t0) is None
    later = await ingest(incidents, "Later", "info")
    worst = await ingest(incidents, "Worst", "critical")
    # The quota is spent: both wait for their turn, listed on the digest meanwhile; the
    # critical card's is the slot that frees first, the other's the one after.
    assert await ask(database, QUOTA, later, t0) == t0 + 2 * WINDOW
    assert await ask(database, QUOTA, worst, t0) == t0 + WINDOW
    listed, digest_jobs = await digest_state(database)
    assert listed == {later, worst}
    assert len(digest_jobs) == 1

    freed = t0 + WINDOW + timedelta(seconds=1)
    # Should the older, less severe card ask first, it still waits its turn.
    assert await ask(database, QUOTA, later, freed) == freed + RECHECK
    assert await ask(database, QUOTA, worst, freed) is None
    assert await ask(database, QUOTA, later, freed + RECHECK) == freed + WINDOW


async def test_a_more_severe_card_waiting_goes_before_a_free_slot_is_taken(
    database: Database, incidents: IncidentService
) -> None:
    mild = await ingest(incidents, "Mild", "info")
    worst = await ingest(incidents, "Worst", "critical")
    t0 = utcnow()
    assert await ask(database, QUOTA, mild, t0) == t0 + RECHECK
    assert await ask(database, QUOTA, worst, t0) is None


async def test_a_slot_taken_stays_taken_for_a_post_that_is_tried_again(
    database: Database, incidents: IncidentService
) -> None:
    only = await ingest(incidents, "Only", "warning")
    t0 = utcnow()
    assert await ask(database, QUOTA, only, t0) is None
    assert await ask(database, QUOTA, only, t0 + timedelta(seconds=5)) is None


@pytest.fixture
async def publisher(database: Database) -> AsyncIterator[CardPublisher]:
    async with wired_publisher(database, CHAT, quota=QUOTA) as (publisher, _):
        yield publisher


async def slot_and_listing(database: Database, incident_id: str) -> tuple[bool, bool]:
    async with database.transaction() as session:
        incident = await session.get(Incident, incident_id)
        listed = await session.scalar(
            select(DigestLine.incident_id).where(DigestLine.incident_id == incident_id)
        )
    assert incident is not None
    return incident.card_slot_at is not None, listed is not None


async def test_an_incident_beyond_the_quota_is_listed_before_its_plan_is_read(
    database: Database, incidents: IncidentService, publisher: CardPublisher
) -> None:
    # In a storm the plan reads queue behind each other; the digest line needs no plan.
    first = await ingest(incidents, "First", "warning")
    second = await ingest(incidents, "Second", "warning")
    for incident_id in (first, second):
        job = await held_job(database, SYNC_CARD, IncidentJob(incident_id=incident_id))
        with pytest.raises(RetryJob):
            await publisher.sync_card(job)
    # The first keeps its slot while its card waits for the plan; the second waits on the digest.
    assert await slot_and_listing(database, first) == (True, False)
    assert await slot_and_listing(database, second) == (False, True)


async def test_once_the_quota_is_spent_every_waiting_card_is_listed_at_once(
    database: Database, incidents: IncidentService
) -> None:
    t0 = utcnow()
    first = await ingest(incidents, "First", "warning")
    assert await ask(database, QUOTA, first, t0) is None
    waiting = [await ingest(incidents, f"Waiting{n}", "warning") for n in range(3)]
    resolved = await ingest(incidents, "Resolved", "warning")
    no_job = await ingest(incidents, "NoJob", "warning")
    async with database.transaction() as session:
        await session.execute(
            update(Incident).where(Incident.id == resolved).values(status="resolved")
        )
        await session.execute(
            update(Job)
            .where(Job.kind == JobKind.SYNC_CARD.value, Job.key == no_job)
            .values(status=JobStatus.DONE.value)
        )
    # Only the first waiting card's job asks; in a storm the others' jobs are still queued.
    assert await ask(database, QUOTA, waiting[0], t0) is not None
    listed, digest_jobs = await digest_state(database)
    assert listed == set(waiting)
    assert len(digest_jobs) == 1
    # Their own jobs, when they come round, still get their turn; the line is there already.
    assert await ask(database, QUOTA, waiting[2], t0) == t0 + 3 * WINDOW
