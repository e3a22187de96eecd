"""Execution jobs: one attempt per run, retried on transient failures, never repeated blindly.

An attempt is recorded as started before the cluster is touched, and as "applying" just
before the real (non-dry-run) call. If a run finds an attempt still marked as running, the
worker died mid-attempt: before "applying" nothing reached the cluster and the attempt simply
runs again; after it the change may or may not have happened, so opsgate reads the object and
reports what it can prove, and otherwise fails the execution as "outcome unknown" rather than
risk doing it twice.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from kubernetes_asyncio.client.exceptions import ApiException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.metrics import Metrics
from opsgate.services import audit_chain, timeline
from opsgate.services.action_digest import operation_digest
from opsgate.services.audit_chain import AuditKind
from opsgate.services.failures import Failure, classify
from opsgate.services.job_kinds import (
    KNOWLEDGE,
    LEARN,
    NOTIFY,
    PUBLISH_RESULT,
    SYNC_CARD,
    VERIFY,
    ApprovalJob,
    IncidentJob,
    LearnJob,
    NotifyJob,
    ResultJob,
)
from opsgate.services.jobs import ClaimedJob, Lease, LeaseLost, RetryJob, enqueue
from opsgate.services.kube_executor import APPLY_SENT, Executor, StageFailed, UndoImpossible
from opsgate.services.operation_specs import (
    Plan,
    PlanState,
    changed_since,
    make_plan,
    verifiable,
)
from opsgate.services.operations import Operation
from opsgate.services.plan_reading import plan_of_error
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    Execution,
    ExecutionAttempt,
    Incident,
    Signature,
    utcnow,
)
from opsgate.services.verification import VERIFYING

log = structlog.get_logger(__name__)

QUEUED = "queued"
RUNNING = "running"
RETRY_WAIT = "retry_wait"
SUCCEEDED = "succeeded"
FAILED = "failed"
FINAL_STATES = (SUCCEEDED, FAILED)
DEFAULT_RETRY_AFTER_CAP = 300.0


class Phase(StrEnum):
    """How far a running attempt got (``ExecutionAttempt.phase``)."""

    PREPARING = "preparing"
    APPLYING = "applying"


@dataclass(frozen=True)
class _Attempt:
    incident_id: str
    op: Operation
    context: dict[str, Any]
    number: int
    # The worker running this attempt died after the real call was sent.
    cut_short: bool = False
    # The plan the approvers saw (operation_specs.Plan as JSON), if one was read.
    plan: dict[str, Any] | None = None


class TargetChanged(Exception):
    """The target no longer is what the approvers saw: the approved change is not sent."""


class PlanRefused(Exception):
    """The plan read at the start of an attempt, for an approval decided without one, is
    refused (the target is missing, the dry run rejected) or warns of what nobody approved:
    nothing is sent."""


class ExecutionService:
    def __init__(
        self,
        db: Database,
        executor: Executor,
        *,
        retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._executor = executor
        self._retry_after_cap = retry_after_cap
        self._metrics = metrics or Metrics()

    async def run_job(self, job: ClaimedJob[ApprovalJob]) -> None:
        approval_id = job.payload.approval_id
        begun = await self._begin(job.lease, approval_id)
        if begun is None:
            return
        attempt = begun
        structlog.contextvars.bind_contextvars(incident_id=attempt.incident_id)
        bound = log.bind(approval_id=approval_id, attempt=attempt.number, op=attempt.op.describe())
        if attempt.cut_short:
            await self._settle_cut_short(job.lease, approval_id, attempt)
            return
        bound.info("execution_attempt_started")
        started = time.monotonic()
        failure: Failure | None = None
        stage = "apply"
        detail = ""

        async def applying() -> None:
            await self._check_unchanged(attempt)
            await self._mark_applying(job.lease, approval_id, attempt)

        try:
            attempt = await self._read_missing_plan(job.lease, approval_id, attempt)
            detail = await self._executor.execute(
                attempt.op, attempt.context, before_apply=applying
            )
        except LeaseLost:
            raise
        except PlanRefused as exc:
            stage, failure = "read", Failure(False, str(exc))
        except StageFailed as exc:
            stage, failure = exc.stage, classify(exc.cause)
        except TargetChanged as exc:
            # Nothing was sent: the mark the executor set for the real call does not hold.
            attempt.context.pop(APPLY_SENT, None)
            stage, failure = "plan", Failure(False, str(exc))
        except UndoImpossible as exc:
            stage, failure = "read", Failure(False, str(exc))
        except Exception as exc:
            stage, failure = "read", classify(exc)
        duration_ms = int((time.monotonic() - started) * 1000)
        retry_at = await self._record(
            job.lease, approval_id, attempt, failure, stage, detail, duration_ms
        )
        if failure is None:
            bound.info("execution_attempt_succeeded", duration_ms=duration_ms, detail=detail)
        else:
            bound.warning(
                "execution_attempt_failed",
                duration_ms=duration_ms,
                stage=stage,
                transient=failure.transient,
                http_status=failure.http_status,
                error=failure.message,
            )
        if retry_at is not None:
            raise RetryJob(retry_at, f"retrying after {failure.short() if failure else ''}")

    async def _begin(self, lease: Lease, approval_id: str) -> _Attempt | None:
        async with lease.transaction() as session:
            execution = await _locked_execution(session, approval_id)
            if execution is None or execution.status in FINAL_STATES:
                return None
            approval = await session.get(Approval, approval_id)
            assert approval is not None
            op = Operation.from_dict(approval.operation)
            now = utcnow()
            changed = await _changed_since_signed(session, approval, op)
            if changed is not None:
                await self._finish(session, approval, execution, FAILED, changed)
                audit_chain.record(
                    session,
                    AuditKind.ATTEMPT_ENDED,
                    approval_id=approval_id,
                    incident_id=approval.incident_id,
                    attempt=execution.attempts,
                    outcome="refused",
                    error=changed,
                )
                log.error("execution_refused_changed", approval_id=approval_id, reason=changed)
                return None
            if execution.status == RUNNING:
                row = await _attempt_row(session, approval_id, execution.attempts)
                if row is not None and row.phase == Phase.APPLYING:
                    return _Attempt(
                        approval.incident_id,
                        op,
                        dict(execution.context),
                        execution.attempts,
                        cut_short=True,
                    )
                # Cut short before the real call: nothing reached the cluster, run it again.
                if row is not None:
                    row.started_at = now
                timeline.record(
                    session,
                    approval.incident_id,
                    "execution_resumed",
                    f"attempt {execution.attempts} starts again: opsgate stopped before the "
                    "change was sent",
                )
                return _Attempt(
                    approval.incident_id,
                    op,
                    dict(execution.context),
                    execution.attempts,
                    plan=approval.plan,
                )
            execution.attempts += 1
            if execution.attempts == 1 and approval.decided_at is not None:
                self._metrics.execution_started(
                    op.kind.value, (now - approval.decided_at).total_seconds()
                )
            execution.status = RUNNING
            execution.started_at = execution.started_at or now
            execution.next_attempt_at = None
            approvers = await approver_names(session, approval_id)
            session.add(
                ExecutionAttempt(
                    approval_id=approval_id,
                    attempt=execution.attempts,
                    operation=op.describe(),
                    approved_by=approvers,
                    started_at=now,
                    outcome=RUNNING,
                    phase=Phase.PREPARING,
                )
            )
            timeline.record(
                session,
                approval.incident_id,
                "execution_started",
                f"attempt {execution.attempts}/{execution.max_attempts}: {op.describe()}",
            )
            audit_chain.record(
                session,
                AuditKind.ATTEMPT_STARTED,
                approval_id=approval_id,
                incident_id=approval.incident_id,
                attempt=execution.attempts,
                operation=approval.operation,
                operation_digest=approval.operation_digest,
                approvers=approvers,
            )
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
            return _Attempt(
                approval.incident_id,
                op,
                dict(execution.context),
                execution.attempts,
                plan=approval.plan,
            )

    async def _read_missing_plan(
        self, lease: Lease, approval_id: str, attempt: _Attempt
    ) -> _Attempt:
        """The plan, read now when the approvers saw none (the cluster could not be read while
        the approval was open, or nothing asked it: an auto-approval).

        A refused plan stops the attempt before the executor's own calls; one the cluster still
        cannot give raises what the read raised, so the attempt fails and is retried as any
        transient failure is, never sent blind; a ready one is stored and becomes the plan the
        check just before the real call compares with.
        """
        if attempt.plan is not None and Plan.from_dict(attempt.plan).state is PlanState.READY:
            return attempt
        op = attempt.op
        try:
            facts = await self._executor.survey(op, dry_run=True)
        except Exception as exc:
            plan = plan_of_error(op, exc)
            if plan.state is PlanState.REFUSED:
                raise PlanRefused(f"stopped: {plan.summary}; nothing was applied") from exc
            raise
        plan = make_plan(op, facts)
        async with lease.transaction() as session:
            approval = await session.get(Approval, approval_id, with_for_update={"key_share": True})
            assert approval is not None
            approval.plan = plan.to_dict()
            timeline.record(
                session,
                attempt.incident_id,
                "plan_read",
                f"plan read before the change (none was shown for approval): {plan.summary}",
                status="warning" if plan.warnings else "info",
            )
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=attempt.incident_id))
        log.info("plan_read_before_execution", approval_id=approval_id, plan=plan.summary)
        if plan.warnings:
            # Nobody approved this warning (nothing replaces the pod, the undo changes
            # nothing, ...): a person decides on it, with the plan on the card.
            raise PlanRefused(
                f"stopped: the plan warns that {plan.warnings[0]}, which nobody saw when it "
                "was approved; nothing was applied"
            )
        return dataclasses.replace(attempt, plan=plan.to_dict())

    async def _check_unchanged(self, attempt: _Attempt) -> None:
        """The plan read again just before the real call: a target that changed since the
        plan was read (someone scaled it, a new revision rolled out) stops the execution."""
        # Set by _read_missing_plan, which every attempt passes before the executor runs.
        assert attempt.plan is not None
        planned = Plan.from_dict(attempt.plan)
        op = attempt.op
        try:
            now = await self._executor.survey(op, dry_run=False)
        except ApiException as exc:
            if exc.status == 404:
                raise TargetChanged(
                    f"stopped: {op.target()} no longer exists; nothing was applied"
                ) from exc
            raise
        except UndoImpossible as exc:
            raise TargetChanged(f"stopped: {exc}; nothing was applied") from exc
        diff = changed_since(op, planned.facts, now)
        if diff is not None:
            raise TargetChanged(
                f"stopped: {op.target()} changed since it was approved ({diff}); "
                "nothing was applied"
            )

    async def _mark_applying(self, lease: Lease, approval_id: str, attempt: _Attempt) -> None:
        """Just before the real call: from here on a crash leaves the outcome to be proven.

        The context goes with it, so whoever settles the attempt knows what was sent.
        """
        async with lease.transaction() as session:
            execution = await _locked_execution(session, approval_id)
            row = await _attempt_row(session, approval_id, attempt.number)
            assert execution is not None and row is not None
            row.phase = Phase.APPLYING
            row.dry_run_ok = True
            execution.context = dict(attempt.context)

    async def _settle_cut_short(self, lease: Lease, approval_id: str, attempt: _Attempt) -> None:
        """The real call may have reached the cluster: report what reading the object proves."""
        proof = await self._executor.prove(attempt.op, attempt.context)
        async with lease.transaction() as session:
            execution = await _locked_execution(session, approval_id)
            approval = await session.get(Approval, approval_id)
            assert execution is not None and approval is not None
            if execution.status != RUNNING:
                return
            row = await _attempt_row(session, approval_id, attempt.number)
            now = utcnow()
            if proof is not None:
                note = f"{proof}; opsgate restarted during attempt {attempt.number}"
                if row is not None:
                    row.outcome = SUCCEEDED
                    row.finished_at = now
                    row.detail = note
                await self._finish(session, approval, execution, SUCCEEDED, note)
                _audit_attempt(session, approval, attempt.number, SUCCEEDED, note)
                log.warning("execution_proven_after_restart", approval_id=approval_id)
                return
            note = (
                f"attempt {attempt.number} was cut short (opsgate restarted mid-call); "
                "the outcome is unknown, check the cluster before acting again"
            )
            if row is not None:
                row.outcome = "interrupted"
                row.finished_at = now
                row.error = note
            await self._finish(session, approval, execution, FAILED, note)
            _audit_attempt(session, approval, attempt.number, "interrupted", note)
        log.error("execution_interrupted", approval_id=approval_id, attempt=attempt.number)

    async def _record(
        self,
        lease: Lease,
        approval_id: str,
        attempt: _Attempt,
        failure: Failure | None,
        stage: str,
        detail: str,
        duration_ms: int,
    ) -> datetime | None:
        """Store the attempt's outcome; returns when to retry, or None when it has ended."""
        async with lease.transaction() as session:
            execution = await _locked_execution(session, approval_id)
            approval = await session.get(Approval, approval_id)
            assert execution is not None and approval is not None
            row = await _attempt_row(session, approval_id, attempt.number)
            now = utcnow()
            if row is not None:
                row.finished_at = now
                row.duration_ms = duration_ms
                row.dry_run_ok = failure is None or stage in ("apply", "plan")
                row.detail = detail
                if failure is not None:
                    row.outcome = "transient" if failure.transient else "permanent"
                    row.http_status = failure.http_status
                    row.error = f"{stage}: {failure.message}"
                else:
                    row.outcome = SUCCEEDED
            _audit_attempt(
                session,
                approval,
                attempt.number,
                SUCCEEDED
                if failure is None
                else ("transient" if failure.transient else "permanent"),
                detail if failure is None else f"{stage}: {failure.message}",
                http_status=failure.http_status if failure else None,
                duration_ms=duration_ms,
            )
            execution.context = dict(attempt.context)
            if failure is None:
                await self._finish(session, approval, execution, SUCCEEDED, detail)
                return None
            execution.last_error = failure.message
            execution.last_error_status = failure.http_status
            retries_used = execution.attempts - 1
            retries_allowed = execution.max_attempts - 1
            if failure.transient and execution.attempts < execution.max_attempts:
                delay = execution.retry_delay_seconds
                if failure.retry_after is not None:
                    # The server said when it can take the call again; never sooner, within reason.
                    delay = max(delay, min(failure.retry_after, self._retry_after_cap))
                execution.status = RETRY_WAIT
                execution.next_attempt_at = now + timedelta(seconds=delay)
                timeline.record(
                    session,
                    approval.incident_id,
                    "execution_retry",
                    f"attempt {execution.attempts} failed: {failure.short()}, retrying in "
                    f"{delay:g} s ({retries_used + 1}/{retries_allowed})",
                    status="warning",
                )
                await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
                return execution.next_attempt_at
            if failure.transient:
                why = f" (gave up after {execution.attempts} attempts)"
            else:
                why = " (permanent error, not retried)"
            await self._finish(session, approval, execution, FAILED, f"{failure.short()}{why}")
            return None

    async def _finish(
        self,
        session: AsyncSession,
        approval: Approval,
        execution: Execution,
        status: str,
        detail: str,
    ) -> None:
        execution.status = status
        execution.finished_at = utcnow()
        execution.result_detail = detail
        execution.next_attempt_at = None
        timeline.record(
            session,
            approval.incident_id,
            "execution_succeeded" if status == SUCCEEDED else "execution_failed",
            detail,
            status="success" if status == SUCCEEDED else "error",
        )
        # Publishing is a job of its own: the card edit and the reply survive a restart.
        ref = ApprovalJob(approval_id=approval.id)
        await enqueue(
            session,
            PUBLISH_RESULT,
            ResultJob(approval_id=approval.id, incident_id=approval.incident_id),
        )
        await enqueue(session, LEARN, LearnJob(approval_id=approval.id, event="executed"))
        await enqueue(session, KNOWLEDGE, ref)
        if status == SUCCEEDED and verifiable(Operation.from_dict(approval.operation)):
            execution.verification_status = VERIFYING
            await enqueue(session, VERIFY, ref)
        # One job per other destination, serialised per destination: a receiver that is down
        # delays only itself, never the others nor the reply in the alert thread.
        incident = await session.get(Incident, approval.incident_id)
        for destination in incident.result_destinations if incident else []:
            await enqueue(
                session, NOTIFY, NotifyJob(approval_id=approval.id, destination=str(destination))
            )
        took = execution.finished_at - (execution.started_at or execution.finished_at)
        self._metrics.execution_finished(
            Operation.from_dict(approval.operation).kind.value, status, took.total_seconds()
        )


def _audit_attempt(
    session: AsyncSession,
    approval: Approval,
    number: int,
    outcome: str,
    detail: str,
    **extra: Any,
) -> None:
    audit_chain.record(
        session,
        AuditKind.ATTEMPT_ENDED,
        approval_id=approval.id,
        incident_id=approval.incident_id,
        attempt=number,
        outcome=outcome,
        detail=detail,
        **extra,
    )


async def _changed_since_signed(
    session: AsyncSession, approval: Approval, op: Operation
) -> str | None:
    """Why the stored operation is not the one its approvers signed, or None when it is.

    The digest covers the stored plan's target facts once the plan was read; one over the
    operation alone is an approval decided before its plan came, or from before digests
    covered plans. Approvals from before digests existed carry none, and neither do their
    signatures.
    """
    if approval.operation_digest is None:
        return None
    if approval.operation_digest not in (operation_digest(op, approval.plan), operation_digest(op)):
        return "refused: the stored operation no longer matches the approved digest"
    signed = await session.scalars(
        select(Signature.operation_digest).where(
            Signature.approval_id == approval.id,
            Signature.decision == "approve",
            Signature.lapsed.is_(None),
        )
    )
    if any(digest != approval.operation_digest for digest in signed):
        return "refused: a counted signature is over a different operation"
    return None


async def _attempt_row(
    session: AsyncSession, approval_id: str, number: int
) -> ExecutionAttempt | None:
    return await session.scalar(
        select(ExecutionAttempt).where(
            ExecutionAttempt.approval_id == approval_id, ExecutionAttempt.attempt == number
        )
    )


async def _locked_execution(session: AsyncSession, approval_id: str) -> Execution | None:
    return await session.scalar(
        select(Execution)
        .where(Execution.approval_id == approval_id)
        .with_for_update(key_share=True)
    )


@dataclass(frozen=True)
class ExecutionRecord:
    approval: Approval
    execution: Execution
    incident: Incident


async def load_execution(session: AsyncSession, approval_id: str) -> ExecutionRecord | None:
    """An execution with its approval and incident: what every follow-up job starts from."""
    approval = await session.get(Approval, approval_id)
    execution = await session.get(Execution, approval_id)
    if approval is None or execution is None:
        return None
    incident = await session.get(Incident, approval.incident_id)
    assert incident is not None
    return ExecutionRecord(approval, execution, incident)


async def approver_names(
    session: AsyncSession, approval_id: str, *, lapsed: bool = False
) -> list[str]:
    """Who signed, in signing order: the signatures that count, or with ``lapsed`` those the
    last re-check found no longer counting."""
    rows = await session.scalars(
        select(Signature)
        .where(
            Signature.approval_id == approval_id,
            Signature.decision == "approve",
            Signature.lapsed.is_not(None) if lapsed else Signature.lapsed.is_(None),
        )
        .order_by(Signature.created_at, Signature.id)
    )
    return [f"@{s.username}" if s.username else f"id {s.user_id}" for s in rows]
