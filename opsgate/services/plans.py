"""The plan of a proposed action: read the target, dry-run the change, store what it will do.

A durable job, so the webhook that proposed the action never waits on the cluster, and the
plan is stored with the approval, so a card re-rendered later does not ask the cluster again.
A plan the cluster refuses (no such target, a dry run rejected) closes the approval at once:
nobody is asked to approve what cannot run.

A ready plan binds the approval: its digest then covers the plan's target facts
(operation_specs.SIGNED_FACTS), so a signature made before the plan was read, or over an
earlier reading whose targets differ, no longer counts; its signer taps again over the plan
the card shows. A job run again for a pending approval reads the plan again.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from opsgate.services.approvals import PENDING, ApprovalService
from opsgate.services.failures import classify
from opsgate.services.job_kinds import SYNC_CARD, ApprovalJob, IncidentJob
from opsgate.services.jobs import ClaimedJob, enqueue
from opsgate.services.kube_executor import StageFailed, UndoImpossible
from opsgate.services.operation_specs import Plan, PlanState, make_plan
from opsgate.services.operations import Operation
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval

log = structlog.get_logger(__name__)


class Surveyor(Protocol):
    async def survey(self, op: Operation, *, dry_run: bool) -> dict[str, Any]: ...


async def read_plan(cluster: Surveyor, op: Operation, *, dry_run: bool) -> Plan:
    """The plan as the cluster shows it now; a refusal or an unreachable cluster is a plan too."""
    try:
        facts = await cluster.survey(op, dry_run=dry_run)
    except UndoImpossible as exc:
        return Plan(PlanState.REFUSED, str(exc))
    except StageFailed as exc:
        failure = classify(exc.cause)
        if failure.transient:
            return Plan(PlanState.UNAVAILABLE, f"the dry run could not be sent: {failure.short()}")
        return Plan(PlanState.REFUSED, f"the API server refused the dry run: {failure.short()}")
    except Exception as exc:
        failure = classify(exc)
        if failure.http_status == 404:
            return Plan(PlanState.REFUSED, f"{op.target()} does not exist")
        if failure.transient:
            return Plan(PlanState.UNAVAILABLE, f"the target could not be read: {failure.short()}")
        return Plan(PlanState.REFUSED, f"the target could not be read: {failure.short()}")
    return make_plan(op, facts)


class PlanService:
    def __init__(self, db: Database, cluster: Surveyor, approvals: ApprovalService) -> None:
        self._db = db
        self._cluster = cluster
        self._approvals = approvals

    async def run_job(self, job: ClaimedJob[ApprovalJob]) -> None:
        approval_id = job.payload.approval_id
        async with self._db.transaction() as session:
            approval = await session.get(Approval, approval_id)
            # Approved already (auto-approve, or a quorum met before the plan came) or closed:
            # its plan would describe nothing.
            if approval is None or approval.status != PENDING:
                return
            structlog.contextvars.bind_contextvars(incident_id=approval.incident_id)
            op = Operation.from_dict(approval.operation)
        plan = await read_plan(self._cluster, op, dry_run=True)
        async with job.lease.transaction() as session:
            approval = await session.get(Approval, approval_id, with_for_update=True)
            if approval is None or approval.status != PENDING:
                return
            if plan.state is PlanState.UNAVAILABLE and _ready(approval.plan):
                # A cluster that cannot be asked now tells nothing new about a plan it gave.
                return
            approval.plan = plan.to_dict()
            lapsed = await self._approvals.bind_plan(session, approval)
            if plan.state is PlanState.REFUSED:
                await self._approvals.refuse(session, approval, f"the plan failed: {plan.summary}")
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
        log.info(
            "plan_read",
            approval_id=approval_id,
            state=plan.state.value,
            plan=plan.summary,
            no_longer_counted=lapsed,
        )


def _ready(stored: dict[str, Any] | None) -> bool:
    return stored is not None and stored.get("state") == PlanState.READY.value
