"""The plan of a proposed action: read the target, dry-run the change, store what it will do.

A durable job, so the webhook that proposed the action never waits on the cluster, and the
plan is stored with the approval, so a card re-rendered later does not ask the cluster again.
A plan the cluster refuses (no such target, a dry run rejected) closes the approval at once:
nobody is asked to approve what cannot run. A plan the cluster could not give (a timeout, a
503) is stored as unavailable and read again, a bounded number of times, while the approval
is pending: the card gets its plan, or loses Approve, once the cluster answers.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import structlog

from opsgate.services.approvals import PENDING, ApprovalService
from opsgate.services.job_kinds import SYNC_CARD, ApprovalJob, IncidentJob
from opsgate.services.jobs import ClaimedJob, RetryJob, enqueue
from opsgate.services.operation_specs import Plan, PlanState
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
            # Approved already (auto-approve) or closed: its plan would describe nothing.
            if approval is None or approval.status != PENDING:
                return
            stored = Plan.from_dict(approval.plan) if approval.plan is not None else None
            if stored is not None and stored.state is not PlanState.UNAVAILABLE:
                return
            structlog.contextvars.bind_contextvars(incident_id=approval.incident_id)
            op = Operation.from_dict(approval.operation)
        plan = await read_plan(self._cluster, op, dry_run=True)
        reads = stored.reads + 1 if stored is not None else 1
        plan = dataclasses.replace(plan, reads=reads)
        async with job.lease.transaction() as session:
            approval = await session.get(Approval, approval_id, with_for_update=True)
            if approval is None or approval.status != PENDING:
                return
            approval.plan = plan.to_dict()
            if plan.state is PlanState.REFUSED:
                await self._approvals.refuse(session, approval, f"the plan failed: {plan.summary}")
            # A re-read that still finds the cluster unavailable shows nothing new.
            if stored is None or (stored.state, stored.summary) != (plan.state, plan.summary):
                await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
        log.info(
            "plan_read",
            approval_id=approval_id,
            state=plan.state.value,
            plan=plan.summary,
            reads=reads,
        )
        if plan.state is PlanState.UNAVAILABLE and reads < self._reads:
            # The same job again, so a restart in between loses no read; the execution reads
            # the plan itself should the approval be decided before the cluster answers.
            raise RetryJob(utcnow() + self._retry, f"plan unavailable: {plan.summary}")
