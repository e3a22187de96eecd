"""A signature is over the exact operation and its plan's target facts: a changed proposal or
a re-read plan whose targets changed starts the quorum again, a repeat with new evidence keeps
it, and a stored operation or plan changed after signing is never run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from opsgate.app import load_kube_client
from opsgate.sandbox.kube_api import FakeKube
from opsgate.services.approvals import SIGNED_BEFORE_PLAN, Proposal, Tapper
from opsgate.services.cards import build_card
from opsgate.services.chat import CardView
from opsgate.services.execution import ExecutionService, approver_names
from opsgate.services.incidents import ApiProposal
from opsgate.services.job_kinds import EXECUTE, PLAN, ApprovalJob
from opsgate.services.kube_executor import KubeExecutor
from opsgate.services.plans import PlanService
from opsgate.services.risk import Risk
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    AuditRecord,
    Execution,
    Incident,
    Signature,
    TimelineEvent,
)
from opsgate.settings import Settings
from tests.builders import ALICE, BOB
from tests.integration.test_storage import CARD, services
from tests.job_helpers import held_job

RESTART = "kubectl rollout restart deployment/checkout -n shop"
SCALE = "kubectl scale deployment/checkout -n shop --replicas=5"
LABELS = {"alertname": "CheckoutDown", "namespace": "shop", "service": "checkout"}


def _agent(
    action: str,
    incident_id: str | None = None,
    *,
    rationale: str = "",
    evidence: dict[str, object] | None = None,
    risk: Risk | None = None,
) -> ApiProposal:
    return ApiProposal(
        proposal=Proposal(
            action=action,
            requested_by="agent:holmes",
            agent="holmes",
            description=rationale,
            evidence=evidence,
            declared_risk=risk,
        ),
        incident_id=incident_id,
        labels=LABELS if incident_id is None else {},
    )


async def test_a_repeat_at_a_higher_risk_is_a_new_proposal(database: Database) -> None:
    """A higher declared risk may need more approvers: the earlier signatures, given at the
    lower risk's quorum, do not carry over."""
    approvals, incidents = services(database, quorum={"medium": 1, "high": 2})
    first = await incidents.propose_via_api(_agent(RESTART))
    async with database.transaction() as session:
        await session.execute(
            update(Incident).values(chat_id=CARD.chat_id, message_id=CARD.message_id)
        )
    higher = await incidents.propose_via_api(_agent(RESTART, first.incident_id, risk=Risk.HIGH))
    assert not higher.unchanged and higher.superseded == first.approval.id
    async with database.read() as session:
        old = await session.get(Approval, first.approval.id)
        new = await session.get(Approval, higher.approval.id)
    assert old is not None and old.status == "superseded"
    assert new is not None and (new.risk, new.required_approvals) == ("high", 2)
    one = await approvals.decide(new.id, Tapper(ALICE, "alice"), True, origin=CARD)
    assert "1/2" in one.text


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


async def test_a_repeat_with_new_evidence_updates_it_and_keeps_the_signatures(
    database: Database,
) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    first = await incidents.propose_via_api(
        _agent(RESTART, rationale="stale config", evidence={"text": "p99 930 ms"})
    )
    async with database.transaction() as session:
        await session.execute(
            update(Incident).values(chat_id=CARD.chat_id, message_id=CARD.message_id)
        )
    await approvals.decide(first.approval.id, Tapper(ALICE, "alice"), True, origin=CARD)

    again = await incidents.propose_via_api(
        _agent(
            RESTART,
            first.incident_id,
            rationale="stale config, confirmed",
            evidence={"text": "p99 1200 ms", "findings": {"restarts": "0"}},
        )
    )
    assert again.unchanged and again.evidence_updated
    assert again.approval.id == first.approval.id
    same = await incidents.propose_via_api(
        _agent(
            RESTART,
            first.incident_id,
            rationale="stale config, confirmed",
            evidence={"text": "p99 1200 ms", "findings": {"restarts": "0"}},
        )
    )
    assert same.unchanged and not same.evidence_updated
    async with database.read() as session:
        approval = await session.get(Approval, first.approval.id)
        signed = await approver_names(session, first.approval.id)
        events = list(
            await session.scalars(
                select(TimelineEvent.kind).where(TimelineEvent.kind == "evidence_updated")
            )
        )
    assert approval is not None and approval.status == "pending"
    assert approval.description == "stale config, confirmed"
    assert approval.evidence == {"text": "p99 1200 ms", "findings": {"restarts": "0"}}
    # The operation did not change: Alice's signature still counts, Bob's completes it.
    assert signed == ["@alice"] and events == ["evidence_updated"]
    done = await approvals.decide(first.approval.id, Tapper(BOB, "bob"), True, origin=CARD)
    assert "quorum reached" in done.text


async def _read_plan(database: Database, plans: PlanService, approval_id: str) -> Approval:
    await plans.run_job(await held_job(database, PLAN, ApprovalJob(approval_id=approval_id)))
    async with database.read() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None
    return approval


async def _counted(database: Database, approval_id: str) -> tuple[list[str], dict[str, str]]:
    async with database.read() as session:
        signed = await approver_names(session, approval_id)
        rows = await session.scalars(select(Signature).where(Signature.approval_id == approval_id))
        lapsed = {s.username: s.lapsed for s in rows if s.lapsed is not None}
    return signed, lapsed


async def _card(database: Database, incident_id: str) -> CardView:
    async with database.read() as session:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        return await build_card(session, incident)


async def test_a_signature_is_over_the_plan_it_was_made_with(
    database: Database, executor: tuple[FakeKube, KubeExecutor]
) -> None:
    fake, kube = executor
    approvals, incidents = services(database, quorum={"medium": 2})
    plans = PlanService(database, kube, approvals, reads=1, retry_seconds=0.1)
    proposed = await incidents.propose_via_api(_agent(SCALE))
    approval_id = proposed.approval.id
    async with database.transaction() as session:
        await session.execute(
            update(Incident).values(chat_id=CARD.chat_id, message_id=CARD.message_id)
        )
    alice, bob = Tapper(ALICE, "alice"), Tapper(BOB, "bob")
    # The card went out before its plan (the cluster was slow): Alice signed the operation.
    assert "(1/2)" in (await approvals.decide(approval_id, alice, True, origin=CARD)).text

    planned = await _read_plan(database, plans, approval_id)
    assert planned.plan is not None and planned.plan["summary"] == "2 -> 5 replicas"
    assert planned.operation_digest != proposed.approval.operation_digest
    # Her signature was not over the plan the card shows now: it no longer counts.
    assert await _counted(database, approval_id) == ([], {"alice": SIGNED_BEFORE_PLAN})
    view = await _card(database, proposed.incident_id)
    assert ("@alice", SIGNED_BEFORE_PLAN) in view.lapsed
    assert "(1/2)" in (await approvals.decide(approval_id, bob, True, origin=CARD)).text

    # Read again, the same targets: the same digest, Bob's signature stands.
    again = await _read_plan(database, plans, approval_id)
    assert again.operation_digest == planned.operation_digest
    assert await _counted(database, approval_id) == (["@bob"], {"alice": SIGNED_BEFORE_PLAN})

    # Someone scaled it meanwhile; read again, the plan goes from 3, not 2: a new thing to sign.
    fake.scale("deployments", "shop", "checkout", 3)
    changed = await _read_plan(database, plans, approval_id)
    assert changed.plan is not None and changed.plan["summary"] == "3 -> 5 replicas"
    assert changed.operation_digest not in (planned.operation_digest, None)
    assert await _counted(database, approval_id) == (
        [],
        {"alice": SIGNED_BEFORE_PLAN, "bob": SIGNED_BEFORE_PLAN},
    )
    view = await _card(database, proposed.incident_id)
    assert view.blast_radius == "3 -> 5 replicas" and view.approvers == ()

    # Both sign again, over the plan they see now: quorum, and it runs.
    assert "(1/2)" in (await approvals.decide(approval_id, alice, True, origin=CARD)).text
    assert "quorum reached" in (await approvals.decide(approval_id, bob, True, origin=CARD)).text
    job = await held_job(database, EXECUTE, ApprovalJob(approval_id=approval_id))
    await ExecutionService(database, kube).run_job(job)
    async with database.read() as session:
        execution = await session.get(Execution, approval_id)
        chain = list(
            await session.scalars(
                select(AuditRecord)
                .where(AuditRecord.approval_id == approval_id)
                .order_by(AuditRecord.seq)
            )
        )
    assert execution is not None and execution.status == "succeeded", execution
    assert (fake.get("deployments", "shop", "checkout") or {})["spec"]["replicas"] == 5
    kinds = [r.kind for r in chain]
    assert kinds[:7] == [
        "proposed",
        "signed",
        "plan_bound",
        "signed",
        "plan_bound",
        "signed",
        "signed",
    ]
    bound = [r for r in chain if r.kind == "plan_bound"]
    assert bound[1].data["no_longer_counted"] == ["@alice", "@bob"]
    approved = next(r for r in chain if r.kind == "approved")
    assert approved.data["operation_digest"] == changed.operation_digest


async def test_a_plan_edited_after_approval_is_not_run(
    database: Database, executor: tuple[FakeKube, KubeExecutor]
) -> None:
    fake, kube = executor
    approvals, incidents = services(database)
    plans = PlanService(database, kube, approvals, reads=1, retry_seconds=0.1)
    proposed = await incidents.propose_via_api(_agent(SCALE))
    await _read_plan(database, plans, proposed.approval.id)
    async with database.transaction() as session:
        await session.execute(
            update(Incident).values(chat_id=CARD.chat_id, message_id=CARD.message_id)
        )
    await approvals.decide(proposed.approval.id, Tapper(ALICE, "alice"), True, origin=CARD)
    async with database.transaction() as session:
        approval = await session.get(Approval, proposed.approval.id)
        assert approval is not None and approval.plan is not None
        # Someone with database access makes the plan say the target has 5 replicas already.
        approval.plan = {**approval.plan, "facts": {"replicas": 5}}
    job = await held_job(database, EXECUTE, ApprovalJob(approval_id=proposed.approval.id))
    await ExecutionService(database, kube).run_job(job)
    async with database.read() as session:
        execution = await session.get(Execution, proposed.approval.id)
    assert execution is not None and execution.status == "failed"
    assert "no longer matches the approved digest" in execution.result_detail
    assert (fake.get("deployments", "shop", "checkout") or {})["spec"]["replicas"] == 2
