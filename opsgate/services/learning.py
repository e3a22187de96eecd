"""Learning: playbook statistics per (alert signature, operation), trust, dispositions.

Every fact arrives as a durable ``learn`` job naming an approval and an event; each event is
counted once (``learning_applied``), so a retried job never counts twice, and a failure here
never touches the result already posted.

An agent's proposals are also counted per proposer: the same statistics on a row whose
signature starts with ``agent:<name>|`` (``proposer_signature``), so an agent's record with
one kind of alert is its own, beside the playbook's record that every proposer shares.

Trust is an exponentially weighted moving average of verified outcomes:
``trust <- ALPHA * score + (1 - ALPHA) * trust``, starting at ``INITIAL_TRUST``, with score 1.0
for a verified success, 0.5 for degraded, 0.0 for failed, timeout or a "wrong diagnosis" tap.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services import timeline
from opsgate.services.chat import MessageRef
from opsgate.services.job_kinds import LEARN, LearnJob
from opsgate.services.jobs import ClaimedJob, enqueue, is_queued
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    Disposition,
    Execution,
    Incident,
    LearningApplied,
    PlaybookStat,
    utcnow,
)

log = structlog.get_logger(__name__)

ALPHA = 0.3
INITIAL_TRUST = 0.5
SCORES = {"success": 1.0, "degraded": 0.5, "failed": 0.0, "timeout": 0.0}

APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
EXECUTED = "executed"
VERIFIED = "verified"
WRONG_DIAGNOSIS = "wrong_diagnosis"
EVENTS = (APPROVED, REJECTED, EXPIRED, EXECUTED, VERIFIED, WRONG_DIAGNOSIS)
AUTO_REQUESTER = "auto_approve"


def signature(incident: Incident) -> str:
    """The kind of alert: its name and where it fires."""
    return signature_of(incident.alertname, incident.namespace, incident.service)


def signature_of(alertname: str, namespace: str, service: str) -> str:
    return "|".join((alertname, namespace, service))[:255]


def proposer_signature(agent: str, incident: Incident) -> str:
    """The statistics key of one agent's proposals for this kind of alert."""
    return f"agent:{agent}|{signature(incident)}"[:255]


NOT_HERE = "This button does not belong here."


def is_result_reply(
    incident: Incident | None,
    execution: Execution,
    origin: MessageRef | None,
    origin_offers_it: bool,
) -> bool:
    if incident is None or origin is None or origin.chat_id != incident.chat_id:
        return False
    if execution.result_message_id is not None:
        return origin.message_id == execution.result_message_id
    return origin_offers_it


def ewma(previous: float, score: float) -> float:
    return ALPHA * score + (1 - ALPHA) * previous


@dataclass(frozen=True)
class PlaybookRecord:
    attempts: int
    successes: int
    verified_success: int
    verified_total: int
    trust: float
    mean_recovery_seconds: float | None


class LearningService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def run_job(self, job: ClaimedJob[LearnJob]) -> None:
        approval_id, event = job.payload.approval_id, job.payload.event
        async with job.lease.transaction() as session:
            if await session.get(LearningApplied, (approval_id, event)) is not None:
                return
            approval = await session.get(Approval, approval_id)
            if approval is None or event not in EVENTS:
                return
            incident = await session.get(Incident, approval.incident_id)
            assert incident is not None
            await self._apply(session, approval, incident, event)
            session.add(LearningApplied(approval_id=approval_id, event=event, applied_at=utcnow()))
        log.info("learning_applied", approval_id=approval_id, learned=event)

    async def _apply(
        self, session: AsyncSession, approval: Approval, incident: Incident, event: str
    ) -> None:
        sig = signature(incident)
        if event == APPROVED:
            auto = approval.requested_by == AUTO_REQUESTER
            await _count(session, sig, "auto_executed" if auto else "human_approved")
            return
        if event in (REJECTED, EXPIRED):
            await _count(session, sig, "human_rejected" if event == REJECTED else "expired")
            return
        execution = await session.get(Execution, approval.id)
        sigs = [sig]
        if approval.agent:
            sigs.append(proposer_signature(approval.agent, incident))
        for each in sigs:
            _learn(await _stat(session, each, approval.action), event, execution, incident)

    async def record_feedback(
        self, approval_id: str, who: str, *, origin: MessageRef | None, origin_offers_it: bool
    ) -> str:
        """A "wrong diagnosis" tap: counted once per execution, whoever taps first.

        Only the result's own reply decides: ``origin`` is the tapped message, and when opsgate
        never learned the reply's id (Telegram's answer was lost) a message of the incident's
        chat that carries this very button is taken for it.
        """
        wanted = LearnJob(approval_id=approval_id, event=WRONG_DIAGNOSIS)
        async with self._db.transaction() as session:
            approval = await session.get(Approval, approval_id)
            execution = await session.get(Execution, approval_id)
            if approval is None or execution is None:
                return "This result is not known to opsgate any more."
            incident = await session.get(Incident, approval.incident_id)
            if not is_result_reply(incident, execution, origin, origin_offers_it):
                return NOT_HERE
            already = await session.get(LearningApplied, (approval_id, WRONG_DIAGNOSIS))
            if already is not None or await is_queued(session, LEARN, wanted):
                return "Already recorded: this diagnosis is marked wrong."
            await enqueue(session, LEARN, wanted)
            timeline.record(
                session,
                approval.incident_id,
                "diagnosis_feedback",
                f"{who} marked the diagnosis behind {approval.action} as wrong",
                actor=who,
                status="warning",
            )
        return "Thanks: recorded against this playbook's trust."

    async def record_for(self, signature_: str, operation: str) -> PlaybookRecord | None:
        async with self._db.transaction() as session:
            return await record_in(session, signature_, operation)


def _learn(stat: PlaybookStat, event: str, execution: Execution | None, incident: Incident) -> None:
    """One outcome into one statistics row."""
    stat.updated_at = utcnow()
    if event == EXECUTED and execution is not None:
        stat.attempts += 1
        stat.successes += execution.status == "succeeded"
    elif event == VERIFIED and execution is not None and execution.verification_status:
        outcome = execution.verification_status
        field = f"verified_{outcome}"
        if hasattr(stat, field):
            setattr(stat, field, getattr(stat, field) + 1)
        if outcome in SCORES:
            stat.trust = ewma(stat.trust, SCORES[outcome])
        if outcome == "success" and execution.verified_at is not None:
            stat.recoveries += 1
            stat.recovery_seconds_total += (
                execution.verified_at - incident.created_at
            ).total_seconds()
    elif event == WRONG_DIAGNOSIS:
        stat.wrong_diagnoses += 1
        stat.trust = ewma(stat.trust, 0.0)


async def record_in(session: AsyncSession, sig: str, operation: str) -> PlaybookRecord | None:
    """The record of one (signature, operation), inside the caller's transaction."""
    stat = await session.scalar(
        select(PlaybookStat).where(
            PlaybookStat.signature == sig, PlaybookStat.operation == operation[:500]
        )
    )
    if stat is None:
        return None
    verified = (
        stat.verified_success
        + stat.verified_degraded
        + stat.verified_failed
        + stat.verified_timeout
    )
    mean = stat.recovery_seconds_total / stat.recoveries if stat.recoveries else None
    return PlaybookRecord(
        stat.attempts, stat.successes, stat.verified_success, verified, stat.trust, mean
    )


async def _stat(session: AsyncSession, sig: str, operation: str) -> PlaybookStat:
    stat = await session.scalar(
        select(PlaybookStat)
        .where(PlaybookStat.signature == sig, PlaybookStat.operation == operation[:500])
        .with_for_update(key_share=True)
    )
    if stat is None:
        stat = PlaybookStat(
            signature=sig,
            operation=operation[:500],
            attempts=0,
            successes=0,
            verified_success=0,
            verified_degraded=0,
            verified_failed=0,
            verified_timeout=0,
            wrong_diagnoses=0,
            trust=INITIAL_TRUST,
            recovery_seconds_total=0.0,
            recoveries=0,
            updated_at=utcnow(),
        )
        session.add(stat)
    return stat


async def _count(session: AsyncSession, sig: str, disposition: str) -> None:
    row = await session.scalar(
        select(Disposition)
        .where(Disposition.signature == sig, Disposition.disposition == disposition)
        .with_for_update(key_share=True)
    )
    if row is None:
        row = Disposition(signature=sig, disposition=disposition, count=0)
        session.add(row)
    row.count += 1
