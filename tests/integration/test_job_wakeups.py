"""Which runners a commit that queues jobs wakes: those of the jobs' kinds, for new jobs only."""

from __future__ import annotations

from opsgate.services.job_kinds import LEARN, SYNC_CARD, IncidentJob, JobKind, LearnJob
from opsgate.services.jobs import enqueue, jobs_topic
from opsgate.services.storage.db import Database


def heard(database: Database, kind: JobKind) -> list[None]:
    """One entry per commit announced to runners of ``kind``."""
    calls: list[None] = []
    database.on_commit(jobs_topic(kind), lambda: calls.append(None))
    return calls


async def test_a_new_job_wakes_only_the_runners_of_its_kind(database: Database) -> None:
    cards, actions = heard(database, JobKind.SYNC_CARD), heard(database, JobKind.LEARN)
    async with database.transaction() as session:
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id="INC-WAKE0001"))
    assert (len(cards), len(actions)) == (1, 0)
    async with database.transaction() as session:
        await enqueue(session, LEARN, LearnJob(approval_id="ap-wake", event="approved"))
    assert (len(cards), len(actions)) == (1, 1)


async def test_a_job_coalesced_into_a_waiting_one_wakes_nobody(database: Database) -> None:
    cards = heard(database, JobKind.SYNC_CARD)
    for _ in range(3):
        async with database.transaction() as session:
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id="INC-WAKE0002"))
    # The first commit announced the job; the others found it waiting and added nothing.
    assert len(cards) == 1
    async with database.transaction() as session:
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id="INC-WAKE0003"))
    assert len(cards) == 2
