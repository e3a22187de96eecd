"""A signature is over the exact operation: a changed proposal starts the quorum again, and a
stored operation changed after signing is never run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from opsgate.app import load_kube_client
from opsgate.sandbox.kube_api import FakeKube
from opsgate.services.approvals import Proposal, Tapper
from opsgate.services.execution import ExecutionService
from opsgate.services.incidents import ApiProposal
from opsgate.services.job_kinds import EXECUTE, ApprovalJob
from opsgate.services.kube_executor import KubeExecutor
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, AuditRecord, Execution, Incident
from opsgate.settings import Settings
from tests.builders import ALICE, BOB
from tests.integration.test_storage import CARD, services
from tests.job_helpers import held_job

RESTART = "kubectl rollout restart deployment/checkout -n shop"
SCALE = "kubectl scale deployment/checkout -n shop --replicas=5"
LABELS = {"alertname": "CheckoutDown", "namespace": "shop", "service": "checkout"}


def _agent(action: str, incident_id: str | None = None) -> ApiProposal:
    return ApiProposal(
        proposal=Proposal(action=action, requested_by="agent:holmes", agent="holmes"),
        incident_id=incident_id,
        labels=LABELS if incident_id is None else {},
    )


async def test_a_changed_proposal_resets_the_quorum(database: Database) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    first = await incidents.propose_via_api(_agent(RESTART))
    async with database.transaction() as session:
        await session.execute(
            update(Incident).values(chat_id=CARD.chat_id, message_id=CARD.message_id)
        )
    alice, bob = Tapper(ALICE, "alice"), Tapper(BOB, "bob")
    signed = await approvals.decide(first.approval.id, alice, True, origin=CARD)
    assert "(1/2)" in signed.text

    same = await incidents.propose_via_api(_agent(RESTART, first.incident_id))
    assert same.unchanged and same.approval.id == first.approval.id

    changed = await incidents.propose_via_api(_agent(SCALE, first.incident_id))
    assert changed.superseded == first.approval.id
    assert changed.approval.id != first.approval.id
    assert changed.approval.operation_digest != first.approval.operation_digest

    # A tap on the card as it was (the old proposal's button) decides nothing.
    stale = await approvals.decide(first.approval.id, bob, True, origin=CARD)
    assert "superseded" in stale.text and not stale.changed
    # Alice's signature was over the restart: the scale needs two new ones.
    assert "(1/2)" in (await approvals.decide(changed.approval.id, bob, True, origin=CARD)).text
    done = await approvals.decide(changed.approval.id, alice, True, origin=CARD)
    assert "quorum reached" in done.text
    async with database.read() as session:
        old = await session.get(Approval, first.approval.id)
        kinds = list(
            await session.scalars(
                select(AuditRecord.kind)
                .where(AuditRecord.approval_id == first.approval.id)
                .order_by(AuditRecord.seq)
            )
        )
    assert old is not None and old.status == "superseded"
    assert kinds == ["proposed", "signed", "superseded"]


async def test_another_proposer_cannot_replace_a_pending_proposal(database: Database) -> None:
    _, incidents = services(database)
    first = await incidents.propose_via_api(_agent(RESTART))
    other = ApiProposal(
        proposal=Proposal(action=SCALE, requested_by="agent:kubernaut", agent="kubernaut"),
        incident_id=first.incident_id,
    )
    with pytest.raises(Exception, match="already has an open approval"):
        await incidents.propose_via_api(other)


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[tuple[FakeKube, KubeExecutor]]:
    fake = FakeKube()
    await fake.start()
    fake.add_deployment("shop", "checkout", replicas=2)
    settings = Settings(
        telegram_token="1:x",  # type: ignore[arg-type]
        alert_chat_id=-1,
        kubeconfig=str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
    )
    client = await load_kube_client(settings)
    try:
        yield fake, KubeExecutor(client, request_timeout=30)
    finally:
        await client.close()
        await fake.stop()


async def test_an_operation_edited_after_approval_is_not_run(
    database: Database, executor: tuple[FakeKube, KubeExecutor]
) -> None:
    fake, kube = executor
    approvals, incidents = services(database)
    proposed = await incidents.propose_via_api(_agent(SCALE))
    async with database.transaction() as session:
        await session.execute(
            update(Incident).values(chat_id=CARD.chat_id, message_id=CARD.message_id)
        )
    await approvals.decide(proposed.approval.id, Tapper(ALICE, "alice"), True, origin=CARD)
    # Someone with database access changes what was approved.
    tampered = {**proposed.approval.operation, "replicas": 50}
    async with database.transaction() as session:
        await session.execute(
            update(Approval).where(Approval.id == proposed.approval.id).values(operation=tampered)
        )
    job = await held_job(database, EXECUTE, ApprovalJob(approval_id=proposed.approval.id))
    await ExecutionService(database, kube).run_job(job)
    async with database.read() as session:
        execution = await session.get(Execution, proposed.approval.id)
    assert execution is not None and execution.status == "failed"
    assert "no longer matches the approved digest" in execution.result_detail
    assert (fake.get("deployments", "shop", "checkout") or {})["spec"]["replicas"] == 2
