"""Storage and the approval claim, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import ApprovalService, RetryPolicy, Tapper
from opsgate.services.chat import ChatTarget, MessageRef
from opsgate.services.incidents import IncidentService
from opsgate.services.job_kinds import SYNC_CARD, IncidentJob, JobKind
from opsgate.services.jobs import ClaimedJob, JobRunner, enqueue
from opsgate.services.playbooks import PlaybookService
from opsgate.services.policy import Policy, PolicyDocument
from opsgate.services.policy_source import PolicySource
from opsgate.services.routing import Router
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    Base,
    Execution,
    Incident,
    Job,
    TimelineEvent,
    is_mapped_schema_object,
)
from opsgate.services.storage.schema_upgrade import upgrade_schema
from tests.builders import (
    ALICE,
    BOB,
    CAROL,
    alert,
    am_payload,
    policy_document,
    policy_source,
)

# The incident's chat, and a message in it: the first tap makes it the incident's card.
CARD = MessageRef(-100123, 1)


def services(
    db: Database, quorum: dict[str, int] | None = None
) -> tuple[ApprovalService, IncidentService]:
    approvals = ApprovalService(
        db,
        policy_source(quorum),
        ttl=timedelta(hours=2),
        retry=RetryPolicy(2, 30.0),
    )
    incidents = IncidentService(
        db,
        approvals,
        router=Router(policy_source(), ChatTarget(CARD.chat_id, None)),
        playbooks=PlaybookService(db),
        policy=policy_source(),
    )
    return approvals, incidents


async def test_migrate_is_idempotent(database: Database) -> None:
    await upgrade_schema(database)
    async with database.transaction() as session:
        version = await session.scalar(text("SELECT version_num FROM alembic_version"))
    assert version == "0016"


async def test_datetimes_come_back_as_aware_utc(database: Database) -> None:
    _, incidents = services(database)
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.transaction() as session:
        incident = await session.scalar(select(Incident))
    assert incident is not None
    assert incident.created_at.tzinfo is not None
    assert abs(incident.created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_same_payload_twice_changes_nothing(database: Database) -> None:
    _, incidents = services(database)
    payload = AmPayload.model_validate(am_payload())
    first = await incidents.ingest_alertmanager(payload)
    second = await incidents.ingest_alertmanager(payload)
    assert first.created and first.changed
    assert second.incident_id == first.incident_id and not second.changed
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Incident)) == 1
        assert await session.scalar(select(func.count()).select_from(Approval)) == 1
        jobs = await session.scalar(select(func.count()).select_from(Job))
        events = await session.scalar(select(func.count()).select_from(TimelineEvent))
    # One card job and one plan job, and no timeline noise from the repeat.
    assert jobs == 2
    assert events == 2


async def test_concurrent_taps_claim_exactly_once(database: Database) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
    assert approval is not None and approval.required_approvals == 2
    tappers = [Tapper(ALICE, "alice"), Tapper(BOB, "bob"), Tapper(CAROL, "carol")]
    outcomes = await asyncio.gather(
        *(
            approvals.decide(approval.id, tappers[i % 3], True, origin=CARD, origin_offers_it=True)
            for i in range(20)
        )
    )
    async with database.transaction() as session:
        executions = await session.scalar(select(func.count()).select_from(Execution))
        execute_jobs = await session.scalar(
            select(func.count()).select_from(Job).where(Job.kind == JobKind.EXECUTE.value)
        )
        status = await session.scalar(select(Approval.status).where(Approval.id == approval.id))
    assert executions == 1
    assert execute_jobs == 1
    assert status == "approved"
    assert sum(1 for o in outcomes if "quorum reached" in o.text) == 1
    assert sum(1 for o in outcomes if o.changed) == 2


async def test_two_runners_never_claim_the_same_job(database: Database) -> None:
    async with database.transaction() as session:
        for i in range(30):
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=f"INC-{i:04d}"))
    seen: list[str] = []
    done = asyncio.Event()

    async def handler(job: ClaimedJob[IncidentJob]) -> None:
        seen.append(job.payload.incident_id)
        if len(seen) >= 30:
            done.set()

    runners = [
        JobRunner(
            database,
            {JobKind.SYNC_CARD: handler},
            owner=f"runner-{n}",
            lease_seconds=60,
            poll_interval=0.05,
            concurrency=4,
        )
        for n in range(2)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    await asyncio.wait_for(done.wait(), 20)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    assert sorted(seen) == sorted(f"INC-{i:04d}" for i in range(30))


async def test_coalesced_jobs_queue_once_while_waiting(database: Database) -> None:
    async with database.transaction() as session:
        for _ in range(5):
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id="INC-AAAA"))
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id="INC-BBBB"))
    async with database.transaction() as session:
        count = await session.scalar(select(func.count()).select_from(Job))
    assert count == 2


async def test_a_resolve_closes_the_pending_approval(database: Database) -> None:
    approvals, incidents = services(database)
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    resolved = am_payload('{}:{alertname="CheckoutErrors"}', alert(status="resolved"))
    await incidents.ingest_alertmanager(AmPayload.model_validate(resolved))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
        incident = await session.scalar(select(Incident))
    assert incident is not None and incident.status == "resolved"
    assert approval is not None and approval.status == "cancelled"
    outcome = await approvals.decide(
        approval.id, Tapper(ALICE, "alice"), True, origin=CARD, origin_offers_it=True
    )
    assert outcome.alert and not outcome.changed


async def test_expired_approvals_close(database: Database) -> None:
    approvals, incidents = services(database)
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
        assert approval is not None
        approval.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert await approvals.expire_due() == 1
    outcome = await approvals.decide(
        approval.id, Tapper(ALICE, "alice"), True, origin=CARD, origin_offers_it=True
    )
    assert "expired" in outcome.text and not outcome.changed


async def test_migrations_match_the_models(database: Database) -> None:
    def compare(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection,
            opts={"include_name": lambda name, *_: is_mapped_schema_object(name)},
        )
        return list(compare_metadata(context, Base.metadata))

    async with database.engine.connect() as conn:
        assert await conn.run_sync(compare) == []


async def test_a_signature_of_someone_the_policy_no_longer_allows_does_not_count(
    database: Database,
) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
    assert approval is not None
    await approvals.decide(
        approval.id, Tapper(ALICE, "alice"), True, origin=CARD, origin_offers_it=True
    )

    # opsgate restarts with a policy that no longer names alice.
    document = policy_document({"medium": 2})
    document["users"] = [u for u in document["users"] if u["id"] != ALICE]
    after = ApprovalService(
        database,
        PolicySource(Policy(PolicyDocument.model_validate(document))),
        ttl=timedelta(hours=2),
        retry=RetryPolicy(2, 30.0),
    )
    outcome = await after.decide(
        approval.id, Tapper(BOB, "bob"), True, origin=CARD, origin_offers_it=True
    )
    assert "(1/2)" in outcome.text and "@alice" in outcome.text
    async with database.transaction() as session:
        status = await session.scalar(select(Approval.status).where(Approval.id == approval.id))
        executions = await session.scalar(select(func.count()).select_from(Execution))
    assert (status, executions) == ("pending", 0)

    await after.decide(
        approval.id, Tapper(CAROL, "carol"), True, origin=CARD, origin_offers_it=True
    )
    async with database.transaction() as session:
        status = await session.scalar(select(Approval.status).where(Approval.id == approval.id))
        lapsed = await session.scalar(
            select(TimelineEvent.summary).where(TimelineEvent.kind == "signature_lapsed")
        )
    assert status == "approved" and lapsed is not None and "@alice" in lapsed


async def test_a_tap_judges_by_the_quorum_of_the_policy_in_force(database: Database) -> None:
    _, incidents = services(database, quorum={"medium": 1})
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
    assert approval is not None and approval.required_approvals == 1

    # opsgate restarts with a policy that wants two approvals at medium risk.
    after = ApprovalService(
        database, policy_source({"medium": 2}), ttl=timedelta(hours=2), retry=RetryPolicy(2, 30.0)
    )
    outcome = await after.decide(
        approval.id, Tapper(ALICE, "alice"), True, origin=CARD, origin_offers_it=True
    )
    assert "(1/2)" in outcome.text
    async with database.transaction() as session:
        stored = await session.get(Approval, approval.id)
    assert stored is not None and (stored.status, stored.required_approvals) == ("pending", 2)


async def test_a_reload_never_approves_what_is_past_its_window(database: Database) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
    assert approval is not None
    await approvals.decide(
        approval.id, Tapper(ALICE, "alice"), True, origin=CARD, origin_offers_it=True
    )
    async with database.transaction() as session:
        stored = await session.get(Approval, approval.id)
        assert stored is not None
        # Past its window, before the expiry sweep came round.
        stored.expires_at = datetime.now(UTC) - timedelta(seconds=1)

    reloaded = ApprovalService(
        database, policy_source({"medium": 1}), ttl=timedelta(hours=2), retry=RetryPolicy(2, 30.0)
    )
    assert (await reloaded.recheck_pending()).approved == 0
    async with database.transaction() as session:
        executions = await session.scalar(select(func.count()).select_from(Execution))
    assert executions == 0
