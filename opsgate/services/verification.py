"""Post-execution verification: did the change converge, as ``kubectl rollout status`` judges?

A durable job that looks once, and if the rollout is still under way puts itself back for
the next look; so a verification survives restarts and never holds a worker while it waits.
Its outcome never touches the result already posted; it adds a line to the card.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.metrics import Metrics
from opsgate.services import rollout_status, timeline
from opsgate.services.failures import classify
from opsgate.services.job_kinds import (
    EXTRACT_PLAYBOOK,
    KNOWLEDGE,
    LEARN,
    SYNC_CARD,
    ApprovalJob,
    IncidentJob,
    LearnJob,
)
from opsgate.services.jobs import ClaimedJob, RetryJob, enqueue
from opsgate.services.operation_specs import Check, spec_of
from opsgate.services.operations import Operation
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Incident, utcnow

log = structlog.get_logger(__name__)

VERIFYING = "pending"
SUCCESS = "success"
DEGRADED = "degraded"
FAILED = "failed"
TIMEOUT = "timeout"
OUTCOMES = (SUCCESS, DEGRADED, FAILED, TIMEOUT)


class ClusterReader(Protocol):
    async def read(self, op: Operation) -> dict[str, Any]: ...

    async def pods(self, namespace: str) -> list[dict[str, Any]]: ...

    async def read_owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


class VerificationService:
    def __init__(
        self,
        db: Database,
        cluster: ClusterReader,
        *,
        deadline: timedelta,
        poll: timedelta,
        alert_window: timedelta | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._db = db
        self._cluster = cluster
        self._deadline = deadline
        self._poll = poll
        self._alert_window = alert_window

    async def run_job(self, job: ClaimedJob[ApprovalJob]) -> None:
        approval_id = job.payload.approval_id
        async with self._db.transaction() as session:
            execution = await session.get(Execution, approval_id)
            approval = await session.get(Approval, approval_id)
            if execution is None or approval is None:
                return
            structlog.contextvars.bind_contextvars(incident_id=approval.incident_id)
            if execution.verification_status != VERIFYING or execution.finished_at is None:
                return
            op = Operation.from_dict(approval.operation)
            context = dict(execution.context)
            finished_at = execution.finished_at
            incident = await session.get(Incident, approval.incident_id)
            still_firing = incident is not None and incident.status == "firing"
        verdict = await self._look(op, context)
        now = utcnow()
        if verdict.state == rollout_status.PENDING:
            if now - finished_at < self._deadline:
                raise RetryJob(now + self._poll, verdict.message)
            outcome, detail = TIMEOUT, f"not converged after {self._deadline.total_seconds():g} s: "
            detail += verdict.message
        elif verdict.state == rollout_status.DONE and still_firing and self._alert_window:
            # Converged; the optional second opinion is the alert itself.
            if now - finished_at < self._alert_window:
                raise RetryJob(now + self._poll, "converged; waiting for the alert to resolve")
            window = self._alert_window.total_seconds()
            outcome = DEGRADED
            detail = f"{verdict.message}, but the alert still fires {window:g} s after the fix"
        elif verdict.state == rollout_status.DONE:
            took = (now - finished_at).total_seconds()
            outcome, detail = SUCCESS, f"{verdict.message} in {took:.0f} s"
        else:
            outcome, detail = FAILED, verdict.message
        async with job.lease.transaction() as session:
            recorded = await self._record(session, approval_id, outcome, detail)
        if recorded:
            self._metrics.verification_finished(outcome)
        log.info("verification_finished", approval_id=approval_id, outcome=outcome, detail=detail)

    async def _look(self, op: Operation, context: dict[str, Any]) -> rollout_status.Verdict:
        try:
            match spec_of(op).verification:
                case Check.ROLLOUT:
                    return rollout_status.WORKLOADS[op.target_kind](await self._cluster.read(op))
                case Check.REPLACEMENT:
                    return await self._look_after_delete(
                        op, context.get("owner"), context.get("pod_uid")
                    )
                case None:
                    # Never enqueued (execution asks the same spec); said rather than guessed.
                    return rollout_status.Verdict(
                        rollout_status.FAILED, f"{op.kind} has nothing to verify"
                    )
        except Exception as exc:
            failure = classify(exc)
            if failure.transient:
                return rollout_status.Verdict(rollout_status.PENDING, failure.short())
            return rollout_status.Verdict(rollout_status.FAILED, failure.short())

    async def _look_after_delete(
        self, op: Operation, owner: dict[str, str] | None, pod_uid: str | None
    ) -> rollout_status.Verdict:
        namespace = op.namespace or "default"
        controller = (
            await self._cluster.read_owner(owner["kind"], namespace, owner["name"])
            if owner
            else None
        )
        if owner is None or controller is None:
            return rollout_status.Verdict(
                rollout_status.DONE, "the pod had no controller opsgate can watch; it is gone"
            )
        pods = await self._cluster.pods(namespace)
        desired = rollout_status.desired_pods(controller)
        return rollout_status.back_to_strength(pods, owner["uid"], op.name, desired, pod_uid)

    async def _record(
        self, session: AsyncSession, approval_id: str, outcome: str, detail: str
    ) -> bool:
        execution = await session.get(Execution, approval_id, with_for_update={"key_share": True})
        approval = await session.get(Approval, approval_id)
        assert execution is not None and approval is not None
        if execution.verification_status != VERIFYING:
            return False
        execution.verification_status = outcome
        execution.verification_detail = detail
        execution.verified_at = utcnow()
        timeline.record(
            session,
            approval.incident_id,
            "verification",
            f"{outcome}: {detail}",
            status={SUCCESS: "success", FAILED: "error"}.get(outcome, "warning"),
        )
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
        await enqueue(session, LEARN, LearnJob(approval_id=approval_id, event="verified"))
        await enqueue(session, KNOWLEDGE, ApprovalJob(approval_id=approval_id))
        if outcome == SUCCESS:
            await enqueue(session, EXTRACT_PLAYBOOK, IncidentJob(incident_id=approval.incident_id))
        return True
