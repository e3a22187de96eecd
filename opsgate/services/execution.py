"""Execution jobs: one attempt per run, retried on transient failures, never repeated blindly.

An attempt is marked as started in the database before the cluster is touched. If a run
finds an attempt still marked as running, the process died mid-call: the change may or may
not have happened, so the execution fails as "outcome unknown" rather than risk doing it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services import timeline
from opsgate.services.failures import Failure, classify
from opsgate.services.jobs import ClaimedJob, JobKind, RetryJob, enqueue, enqueue_learning
from opsgate.services.kube_executor import Executor, StageFailed, UndoImpossible
from opsgate.services.operations import Operation
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    Execution,
    ExecutionAttempt,
    Incident,
    Signature,
    utcnow,
)
from opsgate.services.verification import VERIFYING, verifiable

log = structlog.get_logger(__name__)

QUEUED = "queued"
RUNNING = "running"
RETRY_WAIT = "retry_wait"
SUCCEEDED = "succeeded"
FAILED = "failed"
FINAL_STATES = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class _Attempt:
    incident_id: str
    op: Operation
    context: dict[str, Any]
    number: int


class ExecutionService:
    def __init__(
        self,
        db: Database,
        executor: Executor,
        *,
        jobs_ready: Callable[[], None],
        on_finished: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._executor = executor
        self._jobs_ready = jobs_ready
        self._on_finished = on_finished or (lambda _status: None)

    async def run_job(self, job: ClaimedJob) -> None:
        attempt = await self._begin(job.ref)
        self._jobs_ready()
        if attempt is None:
            return
        bound = log.bind(approval_id=job.ref, attempt=attempt.number, op=attempt.op.describe())
        bound.info("execution_attempt_started")
        started = time.monotonic()
        failure: Failure | None = None
        stage = "apply"
        detail = ""
        try:
            detail = await self._executor.execute(attempt.op, attempt.context)
        except StageFailed as exc:
            stage, failure = exc.stage, classify(exc.cause)
        except UndoImpossible as exc:
            stage, failure = "read", Failure(False, str(exc))
        except Exception as exc:
            stage, failure = "read", classify(exc)
        duration_ms = int((time.monotonic() - started) * 1000)
        retry_at = await self._record(job.ref, attempt, failure, stage, detail, duration_ms)
        self._jobs_ready()
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

    async def _begin(self, approval_id: str) -> _Attempt | None:
        async with self._db.transaction() as session:
            execution = await _locked_execution(session, approval_id)
            if execution is None or execution.status in FINAL_STATES:
                return None
            approval = await session.get(Approval, approval_id)
            assert approval is not None
            if execution.status == RUNNING:
                await self._interrupted(session, approval, execution)
                return None
            now = utcnow()
            execution.attempts += 1
            execution.status = RUNNING
            execution.started_at = execution.started_at or now
            execution.next_attempt_at = None
            approvers = await approver_names(session, approval_id)
            op = Operation.from_dict(approval.operation)
            session.add(
                ExecutionAttempt(
                    approval_id=approval_id,
                    attempt=execution.attempts,
                    operation=op.describe(),
                    approved_by=approvers,
                    started_at=now,
                    outcome=RUNNING,
                )
            )
            timeline.record(
                session,
                approval.incident_id,
                "execution_started",
                f"attempt {execution.attempts}/{execution.max_attempts}: {op.describe()}",
            )
            await enqueue(session, JobKind.SYNC_CARD, approval.incident_id, coalesce=True)
            return _Attempt(approval.incident_id, op, dict(execution.context), execution.attempts)

    async def _interrupted(
        self, session: AsyncSession, approval: Approval, execution: Execution
    ) -> None:
        now = utcnow()
        note = (
            f"attempt {execution.attempts} was cut short (opsgate restarted mid-call); "
            "the outcome is unknown, check the cluster before acting again"
        )
        attempt = await session.scalar(
            select(ExecutionAttempt).where(
                ExecutionAttempt.approval_id == approval.id,
                ExecutionAttempt.attempt == execution.attempts,
            )
        )
        if attempt is not None:
            attempt.outcome = "interrupted"
            attempt.finished_at = now
            attempt.error = note
        await self._finish(session, approval, execution, FAILED, note)
        log.error("execution_interrupted", approval_id=approval.id, attempt=execution.attempts)

    async def _record(
        self,
        approval_id: str,
        attempt: _Attempt,
        failure: Failure | None,
        stage: str,
        detail: str,
        duration_ms: int,
    ) -> datetime | None:
        """Store the attempt's outcome; returns when to retry, or None when it has ended."""
        async with self._db.transaction() as session:
            execution = await _locked_execution(session, approval_id)
            approval = await session.get(Approval, approval_id)
            assert execution is not None and approval is not None
            row = await session.scalar(
                select(ExecutionAttempt).where(
                    ExecutionAttempt.approval_id == approval_id,
                    ExecutionAttempt.attempt == attempt.number,
                )
            )
            now = utcnow()
            if row is not None:
                row.finished_at = now
                row.duration_ms = duration_ms
                row.dry_run_ok = failure is None or stage == "apply"
                row.detail = detail
                if failure is not None:
                    row.outcome = "transient" if failure.transient else "permanent"
                    row.http_status = failure.http_status
                    row.error = f"{stage}: {failure.message}"
                else:
                    row.outcome = SUCCEEDED
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
                await enqueue(session, JobKind.SYNC_CARD, approval.incident_id, coalesce=True)
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
        await enqueue(session, JobKind.PUBLISH_RESULT, approval.id, serial_key=approval.incident_id)
        await enqueue_learning(session, approval.id, "executed")
        await enqueue(session, JobKind.KNOWLEDGE, approval.id)
        if status == SUCCEEDED and verifiable(Operation.from_dict(approval.operation)):
            execution.verification_status = VERIFYING
            await enqueue(session, JobKind.VERIFY, approval.id)
        # One job per other destination, serialised per destination: a receiver that is down
        # delays only itself, never the others nor the reply in the alert thread.
        incident = await session.get(Incident, approval.incident_id)
        for destination in incident.result_destinations if incident else []:
            await enqueue(
                session,
                JobKind.NOTIFY,
                f"{approval.id}|{destination}",
                serial_key=str(destination)[:64],
            )
        self._on_finished(status)


async def _locked_execution(session: AsyncSession, approval_id: str) -> Execution | None:
    return await session.scalar(
        select(Execution).where(Execution.approval_id == approval_id).with_for_update()
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


async def approver_names(session: AsyncSession, approval_id: str) -> list[str]:
    rows = await session.scalars(
        select(Signature)
        .where(Signature.approval_id == approval_id, Signature.decision == "approve")
        .order_by(Signature.created_at, Signature.id)
    )
    return [f"@{s.username}" if s.username else f"id {s.user_id}" for s in rows]
