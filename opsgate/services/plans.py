"""The plan of a proposed action: read the target, dry-run the change, store what it will do.

A durable job, so the webhook that proposed the action never waits on the cluster, and the
plan is stored with the approval, so a card re-rendered later does not ask the cluster again.
A plan the cluster refuses (no such target, a dry run rejected) closes the approval at once:
nobody is asked to approve what cannot run. A plan the cluster could not give (a timeout, a
503) is stored as unavailable and read again, a bounded number of times, while the approval
is pending: the card gets its plan, or loses Approve, once the cluster answers.

A ready plan binds the approval: its digest then covers the plan's target facts
(operation_specs.SIGNED_FACTS), so a signature made before the plan was read, or over an
earlier reading whose targets differ, no longer counts; its signer taps again over the plan
the card shows. A job run again for a pending approval reads the plan again.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import structlog

from opsgate.services.approvals import PENDING, ApprovalService
from opsgate.services.job_kinds import SYNC_CARD, ApprovalJob, IncidentJob
from opsgate.services.jobs import ClaimedJob, RetryJob, enqueue
from opsgate.services.operation_specs import Plan, PlanState, plan_ready
from opsgate.services.operations import Operation
from opsgate.services.plan_reading import Surveyor, read_plan
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, utcnow

log = structlog.get_logger(__name__)


class PlanService:
    def __init__(
        self,
        db: Database,
        cluster: Surveyor,
        approvals: ApprovalService,
        *,
        reads: int,
        retry_seconds: float,
    ) -> None:
        self._db = db
        self._cluster = cluster
        self._approvals = approvals
        self._reads = reads
        self._retry = timedelta(seconds=retry_seconds)

    async def run_job(self, job: ClaimedJob[ApprovalJob]) -> None:
        approval_id = job.payload.approval_id
        async with self._db.transaction() as session:
            approval = await session.get(Approval, approval_id)
            # Approved already (auto-approve, or a quorum met before the plan came) or closed:
            # its plan would describe nothing.
            if approval is None or approval.status != PENDING:
                return
            stored = Plan.from_dict(approval.plan) if approval.plan is not None else None
            structlog.contextvars.bind_contextvars(incident_id=approval.incident_id)
            op = Operation.from_dict(approval.operation)
        plan = await read_plan(self._cluster, op, dry_run=True)
        unavailable_before = stored is not None and stored.state is PlanState.UNAVAILABLE
        reads = stored.reads + 1 if stored is not None and unavailable_before else 1
        plan = dataclasses.replace(plan, reads=reads)
        async with job.lease.transaction() as session:
            approval = await session.get(Approval, approval_id, with_for_update={"key_share": True})
            if approval is None or approval.status != PENDING:
                return
            if plan.state is PlanState.UNAVAILABLE and plan_ready(approval.plan):
                # A cluster that cannot be asked now tells nothing new about a plan it gave.
                return
            approval.plan = plan.to_dict()
            lapsed = await self._approvals.bind_plan(session, approval)
            if plan.state is PlanState.REFUSED:
                await self._approvals.refuse(session, approval, f"the plan failed: {plan.summary}")
            # A re-read that finds what the card shows (the cluster still unavailable, or the
            # same plan) changes nothing on it.
            if (
                stored is None
                or (stored.state, stored.summary) != (plan.state, plan.summary)
                or lapsed
            ):
                await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
        log.info(
            "plan_read",
            approval_id=approval_id,
            state=plan.state.value,
            plan=plan.summary,
            reads=reads,
            no_longer_counted=lapsed,
        )
        if plan.state is PlanState.UNAVAILABLE:
            # The same job again, so a restart in between loses no read. Until it is read,
            # the card offers Reject only, so reading goes on while the approval is pending:
            # at the short interval for the first reads, then at four times it.
            wait = self._retry if reads < self._reads else self._retry * 4
            raise RetryJob(utcnow() + wait, f"plan unavailable: {plan.summary}")
