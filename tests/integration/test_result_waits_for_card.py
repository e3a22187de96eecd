"""A fix that finishes before its card is posted (auto-approved, its card still waiting for the
chat's budget) replies under the card once it is there, never into the void before it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from opsgate.services.execution import SUCCEEDED
from opsgate.services.job_kinds import PUBLISH_RESULT, SYNC_CARD, IncidentJob, ResultJob
from opsgate.services.jobs import JobStatus, RetryJob
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Incident, Job, utcnow
from tests.integration.publisher_wiring import wired_publisher
from tests.integration.test_tap_binding import CHAT, open_incident
from tests.job_helpers import held_job


async def finished_fix(db: Database) -> tuple[Approval, Incident]:
    """An incident whose fix ran and succeeded while its card job still waits."""
    _, approval, incident = await open_incident(db, card_id=None)
    now = utcnow()
    async with db.transaction() as session:
        await session.execute(
            update(Approval).where(Approval.id == approval.id).values(status="approved")
        )
        session.add(
            Execution(
                approval_id=approval.id,
                status=SUCCEEDED,
                attempts=1,
                max_attempts=3,
                retry_delay_seconds=30,
                created_at=now,
                started_at=now,
                finished_at=now + timedelta(seconds=2),
                result_detail="restarted",
            )
        )
    return approval, incident


async def test_the_result_waits_for_a_card_still_on_its_way(database: Database) -> None:
    approval, incident = await finished_fix(database)
    result = ResultJob(approval_id=approval.id, incident_id=incident.id)
    async with wired_publisher(database, CHAT) as (publisher, telegram):
        with pytest.raises(RetryJob, match="waits for its card"):
            await publisher.publish_result(await held_job(database, PUBLISH_RESULT, result))
        assert telegram.messages(CHAT) == []

        # The queued card job runs: the card is posted, and the result replies under it.
        async with database.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.kind == SYNC_CARD.kind.value, Job.key == incident.id)
                .values(status=JobStatus.DONE.value)
            )
        await publisher.sync_card(
            await held_job(database, SYNC_CARD, IncidentJob(incident_id=incident.id))
        )
        await publisher.publish_result(await held_job(database, PUBLISH_RESULT, result))
    card, reply = telegram.messages(CHAT)
    assert f"Incident {incident.id}" in card.plain_text
    assert reply.reply_to_message_id == card.message_id
