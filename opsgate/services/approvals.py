"""Approvals: propose, sign, reach quorum exactly once, reject, expire, cancel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from opsgate.metrics import Metrics
from opsgate.services import audit_chain, timeline
from opsgate.services.action_digest import operation_digest
from opsgate.services.audit_chain import AuditKind
from opsgate.services.chat import MessageRef
from opsgate.services.execution import approver_names
from opsgate.services.ids import new_approval_id
from opsgate.services.job_kinds import (
    EXECUTE,
    LEARN,
    PLAN,
    SYNC_CARD,
    ApprovalJob,
    IncidentJob,
    LearnJob,
)
from opsgate.services.jobs import enqueue
from opsgate.services.operation_specs import approvable, effective_risk, plan_ready
from opsgate.services.operations import Operation, parse_operation
from opsgate.services.policy import Policy
from opsgate.services.policy_source import PolicySource
from opsgate.services.risk import Risk
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Incident, Signature, utcnow
from opsgate.services.storage.write_batches import WriteBatches

log = structlog.get_logger(__name__)

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"
# Replaced by a changed proposal for the same incident; its signatures do not carry over.
SUPERSEDED = "superseded"
# Not an approval status (the approval is approved): how it came to be, for the metrics.
AUTO_APPROVED = "auto_approved"
DECISION_OUTCOMES = (APPROVED, AUTO_APPROVED, REJECTED, EXPIRED, CANCELLED, SUPERSEDED)
_AUDIT_KINDS = {
    REJECTED: AuditKind.REJECTED,
    EXPIRED: AuditKind.EXPIRED,
    CANCELLED: AuditKind.CANCELLED,
    SUPERSEDED: AuditKind.SUPERSEDED,
}


@dataclass(frozen=True)
class Proposal:
    action: str
    requested_by: str
    description: str = ""
    declared_risk: Risk | None = None
    requester_user_id: int | None = None
    evidence: dict[str, Any] | None = None
    # The policy agent that proposed it (never a Telegram user, so it can never sign).
    agent: str | None = None


@dataclass(frozen=True)
class Tapper:
    user_id: int
    username: str

    @property
    def display(self) -> str:
        return f"@{self.username}" if self.username else f"id {self.user_id}"


@dataclass(frozen=True)
class DuplicateCard:
    """Another card for one incident: ``message`` carries buttons, the card is ``live``."""

    incident_id: str
    message: MessageRef
    live: MessageRef


@dataclass(frozen=True)
class TapOutcome:
    """What the tapper is told (as an alert when ``alert``) and whether anything changed.

    ``adopted`` when the tap's message became the incident's card (its post had never been
    confirmed); ``duplicate`` when the tap came from a duplicate card: once the tap is answered,
    that message should become a pointer to the live card, without buttons.
    """

    text: str
    alert: bool
    changed: bool
    adopted: bool = False
    duplicate: DuplicateCard | None = None
    incident_id: str | None = None
    # The tap's signature counts now.
    signed: bool = False


@dataclass(frozen=True)
class TapAnswer:
    """What a tap is told before it is decided (as an alert when ``alert``)."""

    text: str
    alert: bool


@dataclass(frozen=True)
class _Tap:
    approval_id: str
    tapper: Tapper
    approve: bool
    origin: MessageRef | None
    origin_offers_it: bool


@dataclass(frozen=True)
class _Terms:
    """What an approval asks, fixed when it is proposed: an approval's operation, risk and
    window never change, so a tap can be judged by the policy without reading them again."""

    operation: Operation
    risk: Risk
    expires_at: datetime
    requester_user_id: int | None
    requested_by: str
    # The incident's card when last read, (chat id, message id): taps from any other message
    # are decided before they are answered.
    card: tuple[int, int] | None
    # Whether a plan was read, as the card shows it. Once read, a plan stays approvable while
    # the approval is pending: a cluster that cannot be asked again leaves it as it was.
    # Before that, Approve may be refused for it (the cluster is unavailable), so those taps
    # are decided before they are answered.
    plan_ready: bool
    # Who signed through this process since: a second tap is told so before its decision.
    signers: set[int] = field(default_factory=set)


@dataclass
class _Card:
    """An approval under its row lock within one transaction, with its incident and, once a
    vote needs them, its signatures: the taps of one batch on one card read them once and
    see each other's changes in memory. ``stale`` once a conditional UPDATE changed the
    approval or its incident: the next tap reads them afresh."""

    approval: Approval
    incident: Incident | None
    policy: Policy
    operation: Operation
    signatures: list[Signature] | None = None
    # Whether a signature counts under ``policy``, per signer: fixed within the transaction.
    lapses: dict[int, str | None] = field(default_factory=dict)
    card_synced: bool = False
    stale: bool = False


# An approval's status, read without a session: the one fact of a refused tap's answer that
# can change after the proposal.
_STATUS = select(Approval.status).where(Approval.id == bindparam("approval_id"))
# Enough terms for every card open at once; past it the oldest are read again when tapped.
_TERMS_KEPT = 1024

# The session key of the approvals ``proposed_together`` holds back until its block ends.
_HELD = "opsgate_approvals_held"
# The table, not the mapped class, for rows inserted together (as timeline.py does).
_APPROVALS = Approval.metadata.tables[Approval.__tablename__]

NOT_HERE = "This button does not belong here."
UNKNOWN_CARD = "This card is not known to opsgate any more."
REQUESTED_IT = "You requested this action; someone else has to approve it."
EXPIRED_TEXT = "Too late: this request has expired."
# A tap the policy allows is answered before it is decided: what it did, the card shows.
APPROVE_RECEIVED = "Approval received: the card shows the count."
REJECT_RECEIVED = "Rejection received: the card shows the outcome."
ALREADY_SIGNED = "You already approved this."
# Why a signature stopped counting when the plan it was made without (or an earlier reading of
# it) was replaced: the signer taps again, over the plan the card shows now.
SIGNED_BEFORE_PLAN = "signed before the plan shown now"
SIGNED_OTHER = "signed a different operation"
DUPLICATE = "This card is a duplicate; use the incident's card."
PLAN_UNREAD = (
    "The cluster could not be read, so the card cannot show what would change: nothing is "
    "approved blind. Approve comes back once the plan is read."
)


@contextlib.asynccontextmanager
async def proposed_together(session: AsyncSession) -> AsyncIterator[None]:
    """Approvals proposed inside the block with :meth:`ApprovalService.add_proposal` are
    inserted as it ends, in the order proposed, with one statement.

    For a batch of new incidents, each with its approval: an ORM object per approval costs
    its attribute sets and the unit of work's bookkeeping, more than its row. Inside the
    block such an approval is not yet a row, so nothing in it may look for it; its incident
    must be flushed before the block ends.
    """
    held: list[dict[str, Any]] = []
    session.info[_HELD] = held
    try:
        yield
    finally:
        del session.info[_HELD]
    if held:
        await session.execute(insert(_APPROVALS), held)


@dataclass(frozen=True)
class PendingRecheck:
    """What a reload's re-check of the pending approvals did."""

    checked: int
    resynced: int
    approved: int


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    delay_seconds: float


class ApprovalService:
    def __init__(
        self,
        db: Database,
        policy: PolicySource,
        *,
        ttl: timedelta,
        retry: RetryPolicy,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._policy = policy
        self._ttl = ttl
        self._retry = retry
        self._metrics = metrics or Metrics()
        # Taps that arrive while a decision is being written are decided together in the next
        # transaction: a burst on one card is one lock wait and one commit, not one each.
        self._taps: WriteBatches[_Tap, TapOutcome] = WriteBatches(
            db, self._decide_taps, self._decide_alone, name="taps"
        )
        self._terms: dict[str, _Terms] = {}
        # The terms being read, per approval: the first taps of a burst on a card wait for
        # one read instead of each reading the approval.
        self._terms_read: dict[str, asyncio.Event] = {}

    async def propose(
        self, session: AsyncSession, incident: Incident, proposal: Proposal
    ) -> Approval:
        """Create a pending approval and have its plan read; raises OperationRefused when the
        action is not allowed."""
        approval = Approval(**await self._proposed(session, incident, proposal))
        session.add(approval)
        return approval

    async def add_proposal(
        self, session: AsyncSession, incident: Incident, proposal: Proposal
    ) -> None:
        """:meth:`propose` for a caller that needs nothing of the approval back: inside
        :func:`proposed_together` its row waits for the block's one insert."""
        row = await self._proposed(session, incident, proposal)
        held: list[dict[str, Any]] | None = session.info.get(_HELD)
        if held is not None:
            held.append(row)
        else:
            session.add(Approval(**row))

    async def _proposed(
        self, session: AsyncSession, incident: Incident, proposal: Proposal
    ) -> dict[str, Any]:
        """A new approval's row, with its timeline event, audit record and plan job."""
        op = parse_operation(proposal.action, default_namespace=incident.namespace or "default")
        risk = effective_risk(op, proposal.declared_risk)
        now = utcnow()
        row: dict[str, Any] = {
            "id": new_approval_id(),
            "incident_id": incident.id,
            "action": op.describe(),
            "operation": op.to_dict(),
            "description": proposal.description,
            "risk": risk.value,
            "requested_by": proposal.requested_by,
            "requester_user_id": proposal.requester_user_id,
            "evidence": proposal.evidence or {},
            "agent": proposal.agent,
            "operation_digest": operation_digest(op),
            "status": PENDING,
            "required_approvals": self._policy.current().quorum(risk),
            "created_at": now,
            "expires_at": now + self._ttl,
        }
        timeline.record(
            session,
            incident.id,
            "approval_requested",
            f"{row['action']} proposed at {risk.value} risk, "
            f"needs {row['required_approvals']} approval(s)",
            actor=proposal.requested_by,
        )
        audit_chain.record(
            session,
            AuditKind.PROPOSED,
            approval_id=row["id"],
            incident_id=incident.id,
            actor=proposal.requested_by,
            operation=row["operation"],
            operation_digest=row["operation_digest"],
            risk=row["risk"],
            agent=proposal.agent,
            required_approvals=row["required_approvals"],
        )
        await enqueue(session, PLAN, ApprovalJob(approval_id=row["id"]))
        return row

    async def refuse(self, session: AsyncSession, approval: Approval, note: str) -> bool:
        """Close a pending approval whose plan the cluster refused: there is nothing to sign."""
        return await self._close(session, approval, CANCELLED, note)

    async def bind_plan(self, session: AsyncSession, approval: Approval) -> list[str]:
        """Make the approval's digest cover its stored plan's target facts; the signers whose
        signature was over another digest (made before the plan was read, or over an earlier
        reading whose targets differ) no longer count and are returned, by name.

        The caller holds the approval's row lock, as a tap does, so no signature slips in
        between. An approval from before digests existed keeps none.
        """
        before = approval.operation_digest
        digest = operation_digest(Operation.from_dict(approval.operation), approval.plan)
        if before is None or digest == before:
            return []
        approval.operation_digest = digest
        signatures = await session.scalars(
            select(Signature)
            .where(Signature.approval_id == approval.id, Signature.decision == "approve")
            .order_by(Signature.created_at, Signature.id)
        )
        lapsed = []
        for sig in signatures:
            if sig.operation_digest != digest:
                sig.lapsed = SIGNED_BEFORE_PLAN
                lapsed.append(Tapper(sig.user_id, sig.username).display)
        if lapsed and (terms := self._terms.get(approval.id)) is not None:
            # They sign again, over the plan the card shows now.
            terms.signers.clear()
        if lapsed:
            timeline.record(
                session,
                approval.incident_id,
                "signature_lapsed",
                f"no longer counted ({SIGNED_BEFORE_PLAN}): {', '.join(lapsed)}",
                status="warning",
            )
        audit_chain.record(
            session,
            AuditKind.PLAN_BOUND,
            approval_id=approval.id,
            incident_id=approval.incident_id,
            operation_digest=digest,
            previous_digest=before,
            no_longer_counted=lapsed,
        )
        return lapsed

    async def supersede(self, session: AsyncSession, approval: Approval, note: str) -> bool:
        """Close a pending approval that a changed proposal replaces: its signatures were
        over another operation, so none of them carries over to the new one."""
        return await self._close(session, approval, SUPERSEDED, note)

    async def decide(
        self,
        approval_id: str,
        tapper: Tapper,
        approve: bool,
        *,
        origin: MessageRef | None,
        origin_offers_it: bool = False,
    ) -> TapOutcome:
        """A tap on Approve / Reject: only the incident's own card decides, whatever approval
        the button's data names.

        ``origin`` is the message the tap came from (None when Telegram did not say);
        ``origin_offers_it`` whether that message, as Telegram delivered it, carries the tapped
        button. Only such a message can be adopted as the card or be a duplicate of it, so a
        forged tap on any other message changes nothing, that message included.
        """
        tap = _Tap(approval_id, tapper, approve, origin, origin_offers_it)
        outcome = await self._taps.submit(tap)
        terms = self._terms.get(approval_id)
        if outcome.signed and terms is not None:
            terms.signers.add(tapper.user_id)
        log.info(
            "approval_tap",
            approval_id=approval_id,
            incident_id=outcome.incident_id,
            user_id=tapper.user_id,
            approve=approve,
            origin_chat_id=origin.chat_id if origin else None,
            origin_message_id=origin.message_id if origin else None,
            changed=outcome.changed,
            adopted=outcome.adopted,
            answer=outcome.text,
        )
        return outcome

    async def foreseen_answer(
        self, approval_id: str, tapper: Tapper, approve: bool, origin: MessageRef | None
    ) -> TapAnswer | None:
        """What a tap is told before :meth:`decide` runs for it, read without the approval's
        row lock, so that no answer waits behind a vote's write transaction.

        What never changes after the proposal (the operation, risk, window and requester)
        and the policy in memory settle a refusal exactly; a tap they allow is told it was
        received, and the card shows what it did. A pending approval's terms are read once
        and kept until it closes, and nothing else is read unless the window or the requester
        refuses the tap: then the approval's status, so that a card closed meanwhile says so.
        ``decide`` still runs for every tap: it records the vote or the refusal, and adopts or
        marks the card.
        None for a tap from any message but the incident's card (a duplicate, a card whose
        post was never confirmed), and for an Approve before the card shows a plan: only the
        decision can tell what it did.
        """
        terms, status = await self._terms_of(approval_id)
        if terms is None:
            return TapAnswer(UNKNOWN_CARD, alert=True)
        if origin is None or terms.card != (origin.chat_id, origin.message_id):
            return None
        if status is not None and status != PENDING:
            return TapAnswer(_too_late(status), alert=True)
        verdict = self._policy.current().authorize(tapper.user_id, terms.operation, terms.risk)
        if not verdict.allowed:
            # Whatever the card's state: someone the policy refuses changes nothing on it.
            return TapAnswer(refusal_text(verdict.reason), alert=True)
        expired = terms.expires_at <= utcnow()
        if approve and not expired and not terms.plan_ready:
            return None
        requested = approve and _requested(terms, tapper)
        if not expired and not requested:
            if approve and tapper.user_id in terms.signers:
                return TapAnswer(ALREADY_SIGNED, alert=True)
            return TapAnswer(APPROVE_RECEIVED if approve else REJECT_RECEIVED, alert=False)
        if status is None:
            row = await self._db.read_row(_STATUS, approval_id=approval_id)
            status = None if row is None else row[0]
        if status is None:
            return TapAnswer(UNKNOWN_CARD, alert=True)
        if status != PENDING:
            return TapAnswer(_too_late(status), alert=True)
        if expired:
            return TapAnswer(EXPIRED_TEXT, alert=True)
        return TapAnswer(REQUESTED_IT, alert=True)

    async def _terms_of(self, approval_id: str) -> tuple[_Terms | None, str | None]:
        """The approval's terms, and its status when they had to be read for it."""
        terms = self._terms.get(approval_id)
        reading = self._terms_read.get(approval_id)
        if terms is None and reading is not None:
            await reading.wait()
            terms = self._terms.get(approval_id)
        if terms is not None:
            return terms, None
        reading = self._terms_read.setdefault(approval_id, asyncio.Event())
        try:
            async with self._db.read() as session:
                approval = await session.get(Approval, approval_id)
                incident = (
                    None if approval is None else await session.get(Incident, approval.incident_id)
                )
        finally:
            if self._terms_read.get(approval_id) is reading:
                del self._terms_read[approval_id]
            reading.set()
        if approval is None:
            return None, None
        if approval.status != PENDING:
            return _terms_read_once(approval, incident), approval.status
        return self._remember_terms(approval, incident), approval.status

    async def card_bound(self, session: AsyncSession, incident: Incident) -> None:
        """The incident's card is being stored in ``session``: its pending approval's terms
        are read with it, so that the card's first tap, on most cards its only one, is
        answered without a read. Should the transaction fail, the terms name a message a
        tap would make the card anyway (the decision adopts it)."""
        approval = await session.scalar(
            select(Approval)
            .where(Approval.incident_id == incident.id, Approval.status == PENDING)
            .order_by(Approval.created_at.desc())
            .limit(1)
        )
        if approval is not None:
            self._remember_terms(approval, incident)

    def _remember_terms(self, approval: Approval, incident: Incident | None) -> _Terms:
        """Keeps a pending approval's terms; closing it (``_close``, ``_claim``) drops them."""
        terms = _terms_read_once(approval, incident)
        kept = self._terms.get(approval.id)
        if kept is not None:
            terms.signers.update(kept.signers)
        if len(self._terms) >= _TERMS_KEPT:
            self._terms.pop(next(iter(self._terms)))
        self._terms[approval.id] = terms
        return terms

    async def _decide_taps(self, session: AsyncSession, taps: Sequence[_Tap]) -> list[TapOutcome]:
        """Each tap judged on what the ones before it left, in arrival order per card; the
        cards in one order everywhere, so two replicas' batches lock their rows alike. One
        policy for the whole transaction, even if a reload swaps it meanwhile."""
        order = sorted(range(len(taps)), key=lambda i: taps[i].approval_id)
        policy = self._policy.current()
        cards: dict[str, _Card] = {}
        outcomes: dict[int, TapOutcome] = {}
        for i in order:
            outcomes[i] = await self._decide(session, taps[i], policy, cards)
        return [outcomes[i] for i in range(len(taps))]

    async def _decide_alone(self, tap: _Tap) -> TapOutcome:
        async with self._db.transaction() as session:
            return await self._decide(session, tap, self._policy.current(), {})

    async def _decide(
        self, session: AsyncSession, tap: _Tap, policy: Policy, cards: dict[str, _Card]
    ) -> TapOutcome:
        card = cards.get(tap.approval_id)
        if card is None or card.stale:
            card = await self._lock_card(session, tap.approval_id, policy)
            if card is None:
                return TapOutcome(UNKNOWN_CARD, True, False)
            cards[tap.approval_id] = card
        incident_id = card.approval.incident_id
        bound = await _bind_to_card(session, card, tap.origin, tap.origin_offers_it)
        if isinstance(bound, TapOutcome):
            return replace(bound, incident_id=incident_id)
        if bound is CardBinding.ADOPTED:
            # The terms were read without the card: the next tap reads them with it.
            self._terms.pop(tap.approval_id, None)
        outcome = await self._judge(session, card, tap.tapper, tap.approve)
        adopted = outcome.adopted or bound is CardBinding.ADOPTED
        return replace(outcome, adopted=adopted, incident_id=incident_id)

    async def _lock_card(
        self, session: AsyncSession, approval_id: str, policy: Policy
    ) -> _Card | None:
        # Lock the rows: concurrent taps on one card are decided one after another. The
        # incident first, as every other writer of both (a proposal, an alert) locks them:
        # adopting a card updates the incident while this transaction holds the approval.
        # The conditional UPDATEs below bypass the session's identity map, so a card read
        # again in one transaction is read afresh.
        incident = await session.scalar(
            select(Incident)
            .where(
                Incident.id
                == select(Approval.incident_id).where(Approval.id == approval_id).scalar_subquery()
            )
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        approval = await session.scalar(
            select(Approval)
            .where(Approval.id == approval_id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        if approval is None:
            return None
        if approval.status != PENDING:
            # Only a pending approval's terms are kept: a tap on a closed card reads its state.
            self._terms.pop(approval.id, None)
            return _Card(approval, incident, policy, Operation.from_dict(approval.operation))
        terms = self._remember_terms(approval, incident)
        return _Card(approval, incident, policy, terms.operation)

    async def _judge(
        self, session: AsyncSession, card: _Card, tapper: Tapper, approve: bool
    ) -> TapOutcome:
        approval, policy, op = card.approval, card.policy, card.operation
        if approval.status != PENDING:
            return TapOutcome(_too_late(approval.status), True, False)
        now = utcnow()
        if approval.expires_at <= now:
            card.stale = True
            await self._close(session, approval, EXPIRED, "approval window ran out")
            return TapOutcome(EXPIRED_TEXT, True, True)
        required = policy.quorum(Risk(approval.risk))
        if approval.required_approvals != required:
            # A restart with an edited policy: the card's tally changes even if this tap fails.
            approval.required_approvals = required
            await _sync_card(session, card)
        verdict = policy.authorize(tapper.user_id, op, Risk(approval.risk))
        if not verdict.allowed:
            timeline.record(
                session,
                approval.incident_id,
                "tap_refused",
                f"{tapper.display} tried to {'approve' if approve else 'reject'}: {verdict.reason}",
                actor=tapper.display,
                status="warning",
            )
            audit_chain.record(
                session,
                AuditKind.TAP_REFUSED,
                approval_id=approval.id,
                incident_id=approval.incident_id,
                actor=tapper.display,
                user_id=tapper.user_id,
                approve=approve,
                reason=verdict.reason,
            )
            return TapOutcome(refusal_text(verdict.reason), True, False)
        if not approve:
            card.stale = True
            await self._close(
                session, approval, REJECTED, f"rejected by {tapper.display}", actor=tapper
            )
            # One decision per person and approval: an approver who changed their mind now
            # rejects, and their approval is not kept beside it.
            own = [sig for sig in await _signatures(session, card) if sig.user_id == tapper.user_id]
            if own:
                own[0].decision = "reject"
            else:
                session.add(_signature(approval, tapper, "reject"))
            return TapOutcome("Rejected. Nothing will run.", False, True)
        if not approvable(approval.plan):
            return TapOutcome(PLAN_UNREAD, True, False)
        if _is_requester(approval, tapper):
            return TapOutcome(REQUESTED_IT, True, False)
        signatures = await _signatures(session, card)
        mine = next((sig for sig in signatures if sig.user_id == tapper.user_id), None)
        if mine is not None and mine.operation_digest == approval.operation_digest:
            count, _ = _count(card)
            return TapOutcome(
                f"You already approved this ({count}/{approval.required_approvals}).", True, False
            )
        if mine is not None:
            # Signed before the plan the card shows now: this tap is over the current one.
            _resign(mine, approval)
        else:
            signature = _signature(approval, tapper, "approve")
            session.add(signature)
            signatures.append(signature)
        lapsed_before = _lapsed_names(signatures)
        count, lapsed = _count(card)
        timeline.record(
            session,
            approval.incident_id,
            "approval_signed",
            f"approved by {tapper.display} ({count}/{approval.required_approvals})",
            actor=tapper.display,
        )
        audit_chain.record(
            session,
            AuditKind.SIGNED,
            approval_id=approval.id,
            incident_id=approval.incident_id,
            actor=tapper.display,
            user_id=tapper.user_id,
            operation_digest=approval.operation_digest,
            counted=count,
            required=approval.required_approvals,
        )
        _record_lapsed(session, approval.incident_id, lapsed_before, lapsed)
        if count < approval.required_approvals:
            await _sync_card(session, card)
            note = f"; no longer counted: {', '.join(lapsed)}" if lapsed else ""
            return TapOutcome(
                f"Approval recorded ({count}/{approval.required_approvals}){note}.",
                False,
                True,
                signed=True,
            )
        card.stale = True
        claimed = await self._claim(session, approval)
        if not claimed:
            return TapOutcome("Too late: this request was decided meanwhile.", True, False)
        return TapOutcome("Approved: quorum reached, executing now.", False, True, signed=True)

    async def auto_approve(self, session: AsyncSession, approval: Approval, note: str) -> bool:
        """Approve without a human tap; callers decide when that is allowed."""
        await session.flush()
        return await self._claim(session, approval, note, outcome=AUTO_APPROVED)

    async def _claim(
        self,
        session: AsyncSession,
        approval: Approval,
        note: str = "quorum reached",
        *,
        outcome: str = APPROVED,
    ) -> bool:
        """pending -> approved with one conditional UPDATE; only the winner enqueues the run."""
        # The next tap reads the approval again, and with it the status this leaves.
        self._terms.pop(approval.id, None)
        now = utcnow()
        result = await session.execute(
            update(Approval)
            .where(Approval.id == approval.id, Approval.status == PENDING)
            .values(status=APPROVED, decided_at=now, decision_note=note)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        self._metrics.approval_decided(outcome, (now - approval.created_at).total_seconds())
        session.add(
            Execution(
                approval_id=approval.id,
                status="queued",
                attempts=0,
                max_attempts=self._retry.max_retries + 1,
                retry_delay_seconds=self._retry.delay_seconds,
                next_attempt_at=now,
                context={},
                created_at=now,
            )
        )
        timeline.record(
            session, approval.incident_id, "approval_granted", f"{note}; execution queued"
        )
        audit_chain.record(
            session,
            AuditKind.APPROVED,
            approval_id=approval.id,
            incident_id=approval.incident_id,
            note=note,
            outcome=outcome,
            operation=approval.operation,
            operation_digest=approval.operation_digest,
            approvers=await approver_names(session, approval.id),
        )
        await enqueue(session, EXECUTE, ApprovalJob(approval_id=approval.id))
        await enqueue(session, LEARN, LearnJob(approval_id=approval.id, event="approved"))
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
        return True

    async def _close(
        self,
        session: AsyncSession,
        approval: Approval,
        status: str,
        note: str,
        *,
        actor: Tapper | None = None,
    ) -> bool:
        self._terms.pop(approval.id, None)
        now = utcnow()
        result = await session.execute(
            update(Approval)
            .where(Approval.id == approval.id, Approval.status == PENDING)
            .values(status=status, decided_at=now, decision_note=note)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        self._metrics.approval_decided(status, (now - approval.created_at).total_seconds())
        kind = {
            REJECTED: "approval_rejected",
            EXPIRED: "approval_expired",
            SUPERSEDED: "approval_superseded",
        }.get(status, "approval_cancelled")
        audit_chain.record(
            session,
            _AUDIT_KINDS.get(status, AuditKind.CANCELLED),
            approval_id=approval.id,
            incident_id=approval.incident_id,
            actor=actor.display if actor else "opsgate",
            note=note,
            **({"user_id": actor.user_id} if actor else {}),
        )
        if status in (REJECTED, EXPIRED):
            await enqueue(session, LEARN, LearnJob(approval_id=approval.id, event=status))
        timeline.record(
            session,
            approval.incident_id,
            kind,
            note,
            status="warning" if status != REJECTED else "info",
        )
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
        return True

    async def cancel_pending(self, session: AsyncSession, incident_id: str, note: str) -> None:
        """Close the incident's pending approval (the alert resolved before anyone decided)."""
        pending = await session.scalars(
            select(Approval).where(Approval.incident_id == incident_id, Approval.status == PENDING)
        )
        for approval in pending:
            await self._close(session, approval, CANCELLED, note)

    async def recheck_pending(self) -> PendingRecheck:
        """At start and after a reload: every pending approval judged by the policy in force.

        A card whose quorum or counted signatures changed is re-synced; one whose quorum is
        met under the new policy is approved, as the next tap would have found.
        """
        policy = self._policy.current()
        checked = resynced = approved = 0
        async with self._db.transaction() as session:
            pending = await session.scalars(
                # The expiry sweep closes the ones past their window; none of those may run.
                select(Approval)
                .where(Approval.status == PENDING, Approval.expires_at > utcnow())
                .with_for_update(key_share=True)
            )
            for approval in list(pending):
                checked += 1
                required_before = approval.required_approvals
                lapsed_before = await approver_names(session, approval.id, lapsed=True)
                approval.required_approvals = policy.quorum(Risk(approval.risk))
                op = Operation.from_dict(approval.operation)
                count, lapsed = await _recheck(session, approval, op, policy)
                if (approval.required_approvals, lapsed) == (required_before, lapsed_before):
                    continue
                _record_recheck(session, approval, required_before, lapsed_before, lapsed)
                if count >= approval.required_approvals and await self._claim(
                    session, approval, "quorum reached under the reloaded policy"
                ):
                    approved += 1
                    continue
                await enqueue(session, SYNC_CARD, IncidentJob(incident_id=approval.incident_id))
                resynced += 1
        log.info("pending_rechecked", checked=checked, resynced=resynced, approved=approved)
        return PendingRecheck(checked, resynced, approved)

    async def expire_due(self) -> int:
        """Close every pending approval whose window has run out, and say so on its card."""
        now = utcnow()
        closed = 0
        async with self._db.transaction() as session:
            due = await session.scalars(
                select(Approval).where(Approval.status == PENDING, Approval.expires_at <= now)
            )
            for approval in list(due):
                if await self._close(session, approval, EXPIRED, "approval window ran out"):
                    closed += 1
        if closed:
            log.info("approvals_expired", count=closed)
        return closed


class CardBinding(StrEnum):
    """How a tap's message relates to the incident's card."""

    CARD = "card"
    ADOPTED = "adopted"


async def _bind_to_card(
    session: AsyncSession, card: _Card, origin: MessageRef | None, origin_offers_it: bool
) -> CardBinding | TapOutcome:
    """Whether the tap came from the incident's card, or else what the tapper is told.

    A card whose post reached Telegram but whose answer never reached opsgate has no stored
    message id; the first tap on it from the incident's chat makes it the card. Any other
    message of that chat carrying the buttons is a duplicate of the card.
    """
    incident = card.incident
    if incident is None or origin is None or origin.chat_id != incident.chat_id:
        return TapOutcome(NOT_HERE, True, False)
    incident_id = incident.id
    card_id = incident.message_id
    if card_id == origin.message_id:
        # Even once its keyboard is gone: a client that missed the edit is told the state.
        return CardBinding.CARD
    if not origin_offers_it:
        return TapOutcome(NOT_HERE, True, False)
    if card_id is None:
        adopted = await session.execute(
            update(Incident)
            .where(Incident.id == incident_id, Incident.message_id.is_(None))
            .values(message_id=origin.message_id)
            .execution_options(synchronize_session=False)
        )
        if adopted.rowcount == 1:  # type: ignore[attr-defined]
            # What the UPDATE stored, so the next taps of this transaction see the card.
            set_committed_value(incident, "message_id", origin.message_id)
            timeline.record(
                session,
                incident_id,
                "card_adopted",
                f"a tap came from message {origin.message_id}, a card whose post was never "
                "confirmed; it is the incident's card now",
            )
            await _sync_card(session, card)
            return CardBinding.ADOPTED
        # The card's post was confirmed meanwhile: compare with what was stored.
        card_id = await session.scalar(
            select(Incident.message_id).where(Incident.id == incident_id)
        )
        set_committed_value(incident, "message_id", card_id)
    if card_id == origin.message_id:
        return CardBinding.CARD
    if card_id is None:  # not reachable: the conditional update found a card stored
        return TapOutcome(NOT_HERE, True, False)
    live = MessageRef(incident.chat_id, card_id, incident.thread_id)
    return TapOutcome(DUPLICATE, True, False, duplicate=DuplicateCard(incident_id, origin, live))


async def _sync_card(session: AsyncSession, card: _Card) -> None:
    """Have the card redrawn after this transaction: once, however many of its taps it holds
    (the job coalesces, so a second one would change nothing)."""
    if not card.card_synced:
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id=card.approval.incident_id))
        card.card_synced = True


async def _signatures(session: AsyncSession, card: _Card) -> list[Signature]:
    """The approval's signatures, every decision, in signing order; read once per card."""
    if card.signatures is None:
        rows = await session.scalars(
            select(Signature)
            .where(Signature.approval_id == card.approval.id)
            .order_by(Signature.created_at, Signature.id)
        )
        card.signatures = list(rows)
    return card.signatures


def refusal_text(reason: str) -> str:
    return f"Not allowed. {reason}"


def _signature(approval: Approval, tapper: Tapper, decision: str) -> Signature:
    return Signature(
        approval_id=approval.id,
        user_id=tapper.user_id,
        username=tapper.username,
        decision=decision,
        # Over what the card showed when it was tapped: the approval's operation, fixed.
        operation_digest=approval.operation_digest,
        created_at=utcnow(),
    )


def _resign(signature: Signature, approval: Approval) -> None:
    """One signature per signer and approval: a new tap replaces one over an older digest."""
    signature.operation_digest = approval.operation_digest
    signature.created_at = utcnow()
    signature.lapsed = None


def _terms_read_once(approval: Approval, incident: Incident | None) -> _Terms:
    card = None
    if incident is not None and incident.message_id is not None:
        card = (incident.chat_id, incident.message_id)
    return _Terms(
        Operation.from_dict(approval.operation),
        Risk(approval.risk),
        approval.expires_at,
        approval.requester_user_id,
        approval.requested_by,
        card,
        plan_ready(approval.plan),
    )


def _too_late(status: str) -> str:
    return f"Too late: this request is already {status}."


def _is_requester(approval: Approval, tapper: Tapper) -> bool:
    return _requested_by(approval.requester_user_id, approval.requested_by, tapper)


def _requested(terms: _Terms, tapper: Tapper) -> bool:
    return _requested_by(terms.requester_user_id, terms.requested_by, tapper)


def _requested_by(user_id: int | None, requested_by: str, tapper: Tapper) -> bool:
    if user_id is not None and user_id == tapper.user_id:
        return True
    requested = requested_by.strip().lstrip("@").lower()
    return bool(tapper.username) and requested == tapper.username.lower()


def lapse_reason(policy: Policy, user_id: int, op: Operation, risk: Risk) -> str | None:
    """Why a signature does not count under ``policy``; None when it does."""
    if policy.authorize(user_id, op, risk).allowed:
        return None
    if not policy.is_member(user_id):
        return "not in the policy any more"
    return "not an approver for this action under the current policy"


async def _recheck(
    session: AsyncSession, approval: Approval, op: Operation, policy: Policy
) -> tuple[int, list[str]]:
    """The approvals that count under ``policy``, and who lost the right; each signature is
    marked, so the card can say whose signature no longer counts and why."""
    signatures = await session.scalars(
        select(Signature)
        .where(Signature.approval_id == approval.id, Signature.decision == "approve")
        .order_by(Signature.created_at, Signature.id)
    )
    return _count(_Card(approval, None, policy, op, signatures=list(signatures)))


def _count(card: _Card) -> tuple[int, list[str]]:
    """:func:`_recheck` over the card's signatures as this transaction holds them."""
    approval = card.approval
    count, lapsed = 0, []
    for sig in card.signatures or ():
        if sig.decision != "approve":
            continue
        reason: str | None
        if sig.operation_digest != approval.operation_digest:
            # The reason given when the plan was bound says more than this one.
            reason = sig.lapsed if sig.lapsed == SIGNED_BEFORE_PLAN else SIGNED_OTHER
        else:
            if sig.user_id not in card.lapses:
                card.lapses[sig.user_id] = lapse_reason(
                    card.policy, sig.user_id, card.operation, Risk(approval.risk)
                )
            reason = card.lapses[sig.user_id]
        if sig.lapsed != reason:
            sig.lapsed = reason
        if reason is None:
            count += 1
        else:
            lapsed.append(Tapper(sig.user_id, sig.username).display)
    return count, lapsed


def _lapsed_names(signatures: Sequence[Signature]) -> list[str]:
    """``approver_names(lapsed=True)`` over signatures already in memory."""
    return [
        Tapper(sig.user_id, sig.username).display
        for sig in signatures
        if sig.decision == "approve" and sig.lapsed is not None
    ]


def _record_lapsed(
    session: AsyncSession, incident_id: str, before: list[str], after: list[str]
) -> None:
    newly = [name for name in after if name not in before]
    if newly:
        # The policy changed since they signed: their signatures no longer count.
        timeline.record(
            session,
            incident_id,
            "signature_lapsed",
            f"no longer counted (not allowed by the policy in force): {', '.join(newly)}",
            status="warning",
        )
    restored = [name for name in before if name not in after]
    if restored:
        timeline.record(
            session,
            incident_id,
            "signature_restored",
            f"counted again under the policy in force: {', '.join(restored)}",
        )


def _record_recheck(
    session: AsyncSession,
    approval: Approval,
    required_before: int,
    lapsed_before: list[str],
    lapsed: list[str],
) -> None:
    if approval.required_approvals != required_before:
        timeline.record(
            session,
            approval.incident_id,
            "quorum_changed",
            f"the reloaded policy needs {approval.required_approvals} approval(s), "
            f"not {required_before}",
        )
    _record_lapsed(session, approval.incident_id, lapsed_before, lapsed)
