"""Undo from the result: the inverse of a successful change, proposed as a new approval.

Tapping Undo never runs anything: it proposes the inverse (operation_specs) on a new card of
the incident, with its own plan, risk and quorum, and someone other than the tapper approves it.
Who may tap is the approve permission for the inverse: proposing what one could not approve is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import select

from opsgate.services import timeline
from opsgate.services.approvals import PENDING, ApprovalService, Proposal, Tapper
from opsgate.services.chat import MessageRef
from opsgate.services.execution import SUCCEEDED
from opsgate.services.job_kinds import SYNC_CARD, IncidentJob
from opsgate.services.jobs import enqueue
from opsgate.services.learning import NOT_HERE, is_result_reply
from opsgate.services.operation_specs import effective_risk, inverse
from opsgate.services.operations import Operation
from opsgate.services.policy_source import PolicySource
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Incident

log = structlog.get_logger(__name__)

# Where an undo approval records the execution it undoes.
UNDO_OF = "undo_of"


@dataclass(frozen=True)
class UndoOutcome:
    text: str
    alert: bool
    approval_id: str | None = None


class UndoService:
    def __init__(self, db: Database, approvals: ApprovalService, policy: PolicySource) -> None:
        self._db = db
        self._approvals = approvals
        self._policy = policy

    async def propose(
        self,
        approval_id: str,
        tapper: Tapper,
        *,
        origin: MessageRef | None,
        origin_offers_it: bool,
    ) -> UndoOutcome:
        """``origin``: the tapped message; only the result's own reply proposes (as for the
        "wrong diagnosis" button)."""
        async with self._db.transaction() as session:
            approval = await session.get(Approval, approval_id)
            execution = await session.get(Execution, approval_id)
            if approval is None or execution is None:
                return UndoOutcome("This result is not known to opsgate any more.", True)
            # Locked: two taps on Undo propose one approval.
            incident = await session.scalar(
                select(Incident)
                .where(Incident.id == approval.incident_id)
                .with_for_update(key_share=True)
            )
            if incident is None or not is_result_reply(
                incident, execution, origin, origin_offers_it
            ):
                return UndoOutcome(NOT_HERE, True)
            op = Operation.from_dict(approval.operation)
            undo = inverse(op, execution.context) if execution.status == SUCCEEDED else None
            if undo is None:
                return UndoOutcome("There is nothing opsgate can undo here.", True)
            risk = effective_risk(undo, None)
            verdict = self._policy.current().authorize(tapper.user_id, undo, risk)
            if not verdict.allowed:
                timeline.record(
                    session,
                    incident.id,
                    "undo_refused",
                    f"{tapper.display} tried to propose {undo.describe()}: {verdict.reason}",
                    actor=tapper.display,
                    status="warning",
                )
                return UndoOutcome(f"Not allowed. {verdict.reason}", True)
            others = list(
                await session.scalars(select(Approval).where(Approval.incident_id == incident.id))
            )
            if any(a.evidence.get(UNDO_OF) == approval_id for a in others):
                return UndoOutcome("The undo was proposed already: see the card.", True)
            if any(a.status == PENDING for a in others):
                return UndoOutcome("The card has an open request; decide that one first.", True)
            proposed = await self._approvals.propose(
                session,
                incident,
                Proposal(
                    action=undo.describe(),
                    requested_by=tapper.display,
                    description=f"undo of {approval.action}",
                    declared_risk=risk,
                    requester_user_id=tapper.user_id,
                    evidence={UNDO_OF: approval_id},
                ),
            )
            timeline.record(
                session,
                incident.id,
                "undo_proposed",
                f"{tapper.display} proposed undoing {approval.action}: {undo.describe()}",
                actor=tapper.display,
            )
            # The undo gets a card of its own, posted where the chat is now: the old card,
            # far up the chat, keeps what it says about the fix and loses its buttons once the
            # new one is there. Its quota slot was taken already, so the new card waits only
            # for its plan.
            if incident.message_id is not None:
                incident.retired_card_id = incident.message_id
                incident.message_id = None
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
            new_id = proposed.id
        log.info("undo_proposed", approval_id=new_id, undoes=approval_id, user_id=tapper.user_id)
        return UndoOutcome(
            "Undo proposed on a new card: it runs once someone else approves it there.",
            False,
            new_id,
        )
