"""The audit chain's execution attempts, rejections and expiries: what each record says,
that the chain verifies, and that editing one of them is found; on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from opsgate.sandbox.kube_api import FakeKube
from opsgate.services import audit_chain
from opsgate.services.approvals import Tapper
from opsgate.services.execution import ExecutionService
from opsgate.services.job_kinds import EXECUTE, ApprovalJob
from opsgate.services.jobs import RetryJob
from opsgate.services.kube_executor import KubeExecutor
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, AuditRecord, Incident, utcnow
from tests.builders import ALICE, BOB
from tests.integration.test_changed_proposal import RESTART, SCALE, _agent
from tests.integration.test_changed_proposal import executor as executor
from tests.integration.test_storage import CARD, services
from tests.job_helpers import held_job


async def chain_of(db: Database, approval_id: str) -> list[AuditRecord]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(AuditRecord)
                .where(AuditRecord.approval_id == approval_id)
                .order_by(AuditRecord.seq)
            )
        )


async def on_card(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Incident).values(chat_id=CARD.chat_id, message_id=CARD.message_id)
        )


async def test_attempts_are_chained_with_their_outcomes(
    database: Database, executor: tuple[FakeKube, KubeExecutor]
) -> None:
    fake, kube = executor
    approvals, incidents = services(database)
    proposed = await incidents.propose_via_api(_agent(RESTART))
    approval_id = proposed.approval.id
    await on_card(database)
    await approvals.decide(approval_id, Tapper(ALICE, "alice"), True, origin=CARD)
    # The first attempt's real write meets a 503: transient, so it is tried again.
    fake.inject("PATCH", r"/deployments/checkout$", 503, dry_run=False)
    execution = ExecutionService(database, kube)
    job = ApprovalJob(approval_id=approval_id)
    with pytest.raises(RetryJob):
        await execution.run_job(await held_job(database, EXECUTE, job))
    await execution.run_job(await held_job(database, EXECUTE, job))

    rows = await chain_of(database, approval_id)
    assert [r.kind for r in rows] == [
        "proposed",
        "signed",
        "approved",
        "attempt_started",
        "attempt_ended",
        "attempt_started",
        "attempt_ended",
    ]
    digest = proposed.approval.operation_digest
    first, failed, second, done = rows[3:]
    assert first.data["attempt"] == 1 and second.data["attempt"] == 2
    for started in (first, second):
        assert started.data["operation_digest"] == digest
        assert started.data["approvers"] == ["@alice"]
        assert started.data["operation"]["kind"] == "rollout_restart"
        assert started.actor == "opsgate" and started.incident_id == proposed.incident_id
    assert (failed.data["attempt"], failed.data["outcome"]) == (1, "transient")
    assert failed.data["http_status"] == 503 and failed.data["detail"].startswith("apply:")
    assert (done.data["attempt"], done.data["outcome"]) == (2, "succeeded")
    assert done.data["http_status"] is None and done.data["duration_ms"] >= 0
    verdict = await audit_chain.verify(database)
    assert verdict.ok and verdict.records == len(await chain_of(database, approval_id))

    # Rewriting a failed attempt as a success is found at that record.
    async with database.transaction() as session:
        await session.execute(
            update(AuditRecord)
            .where(AuditRecord.seq == failed.seq)
            .values(data={**failed.data, "outcome": "succeeded"})
        )
    verdict = await audit_chain.verify(database)
    assert (verdict.ok, verdict.broken_seq) == (False, failed.seq)


async def test_an_attempt_refused_for_a_changed_operation_is_recorded(
    database: Database, executor: tuple[FakeKube, KubeExecutor]
) -> None:
    _, kube = executor
    approvals, incidents = services(database)
    proposed = await incidents.propose_via_api(_agent(SCALE))
    approval_id = proposed.approval.id
    await on_card(database)
    await approvals.decide(approval_id, Tapper(ALICE, "alice"), True, origin=CARD)
    async with database.transaction() as session:
        await session.execute(
            update(Approval)
            .where(Approval.id == approval_id)
            .values(operation={**proposed.approval.operation, "replicas": 50})
        )
    await ExecutionService(database, kube).run_job(
        await held_job(database, EXECUTE, ApprovalJob(approval_id=approval_id))
    )
    rows = await chain_of(database, approval_id)
    assert [r.kind for r in rows] == ["proposed", "signed", "approved", "attempt_ended"]
    refused = rows[-1]
    assert refused.data["outcome"] == "refused"
    assert "no longer matches the approved digest" in refused.data["error"]
    assert (await audit_chain.verify(database)).ok


async def test_rejected_and_expired_are_chained(database: Database) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    rejected = await incidents.propose_via_api(_agent(RESTART))
    await on_card(database)
    await approvals.decide(rejected.approval.id, Tapper(ALICE, "alice"), True, origin=CARD)
    await approvals.decide(rejected.approval.id, Tapper(BOB, "bob"), False, origin=CARD)

    other = _agent(RESTART)
    expiring = await incidents.propose_via_api(
        replace(other, labels={**other.labels, "alertname": "CheckoutSlow"})
    )
    async with database.transaction() as session:
        await session.execute(
            update(Approval)
            .where(Approval.id == expiring.approval.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await approvals.expire_due() == 1

    rows = await chain_of(database, rejected.approval.id)
    assert [r.kind for r in rows] == ["proposed", "signed", "rejected"]
    no = rows[-1]
    assert no.actor == "@bob" and no.data == {"note": "rejected by @bob", "user_id": BOB}
    rows = await chain_of(database, expiring.approval.id)
    assert [r.kind for r in rows] == ["proposed", "expired"]
    ran_out = rows[-1]
    assert ran_out.actor == "opsgate" and ran_out.data == {"note": "approval window ran out"}
    assert ran_out.incident_id == expiring.incident_id
    verdict = await audit_chain.verify(database)
    assert verdict.ok and verdict.records == 5

    # Turning the rejection into an approval after the fact breaks the chain there.
    async with database.transaction() as session:
        await session.execute(
            update(AuditRecord).where(AuditRecord.seq == no.seq).values(kind="approved")
        )
    verdict = await audit_chain.verify(database)
    assert (verdict.ok, verdict.broken_seq) == (False, no.seq)
