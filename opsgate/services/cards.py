"""The alert card and the result reply: built from the database, pushed through the ChatPort.

Cards are always rendered from stored state, so an edit is idempotent and a burst of
changes collapses into one edit showing the latest truth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.metrics import Metrics
from opsgate.services import timeline
from opsgate.services.agent_evidence import agent_card_fields
from opsgate.services.card_quota import CardQuota
from opsgate.services.chat import (
    AttemptLine,
    CardView,
    ChatError,
    ChatGone,
    ChatOutcomeUnknown,
    ChatPort,
    ChatRejected,
    ChatTarget,
    MessageRef,
    RefireLine,
    ResultView,
)
from opsgate.services.digests import is_listed, schedule_digest
from opsgate.services.execution import SUCCEEDED, approver_names, load_execution
from opsgate.services.job_kinds import SYNC_CARD, IncidentJob, ResultJob
from opsgate.services.jobs import ClaimedJob, Lease, RetryJob, is_queued
from opsgate.services.learning import AUTO_REQUESTER, proposer_signature, record_in, signature
from opsgate.services.operation_specs import Plan, PlanState, approvable, blast_radius, inverse
from opsgate.services.operations import Operation
from opsgate.services.playbooks import REQUESTER_PREFIX as PLAYBOOK
from opsgate.services.playbooks import record_text
from opsgate.services.policy_source import PolicySource
from opsgate.services.risk import Risk
from opsgate.services.silences import latest_silence, may_silence
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Alert,
    Approval,
    Execution,
    ExecutionAttempt,
    Incident,
    Signature,
    TimelineEvent,
    utcnow,
)

log = structlog.get_logger(__name__)

# How long a new card waits for its action's plan before it goes out without it: a card that
# shows the plan at once never offers Approve for a target that does not exist.
PLAN_WAIT = timedelta(seconds=5)
PLAN_POLL = timedelta(milliseconds=200)
# How soon a result whose card is still to be posted looks again.
RESULT_WAITS_FOR_CARD = timedelta(milliseconds=500)
# How long a card whose delivery Telegram did not confirm waits for a tap to claim it before
# it is posted again.
UNKNOWN_CARD_WAIT = timedelta(seconds=60)
# The timeline kind of a card the chat refused, and why, for the metric's label.
CARD_REFUSED = "card_failed"
# A card always fits Telegram's limits (the renderer's budgets), so a chat refuses it because the
# bot is not in it or may not post there: an admin can fix that. The card is tried again this
# much later after each refusal, then no more; /status lists it meanwhile and after.
REFUSED_CARD_RETRIES = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
)
CHAT_GONE = "chat_gone"
CHAT_REJECTED = "rejected"
REFUSAL_REASONS = (CHAT_GONE, CHAT_REJECTED)


@dataclass(frozen=True)
class RefusedCard:
    incident_id: str
    chat_id: int
    at: datetime
    reason: str


@dataclass(frozen=True)
class RefusedCards:
    """Incidents whose card no chat shows, newest first; ``total`` counts them all."""

    cards: list[RefusedCard]
    total: int


async def refused_cards(session: AsyncSession, limit: int) -> RefusedCards:
    """Cards refused for good and never posted since (a later post would have set the card),
    one line per incident with its latest refusal."""
    latest = (
        select(func.max(TimelineEvent.id).label("id"))
        .join(Incident, Incident.id == TimelineEvent.incident_id)
        .where(TimelineEvent.kind == CARD_REFUSED, Incident.message_id.is_(None))
        .group_by(TimelineEvent.incident_id)
        .subquery()
    )
    total = int(await session.scalar(select(func.count()).select_from(latest)) or 0)
    rows = await session.execute(
        select(TimelineEvent, Incident.chat_id)
        .join(latest, latest.c.id == TimelineEvent.id)
        .join(Incident, Incident.id == TimelineEvent.incident_id)
        .order_by(TimelineEvent.at.desc(), TimelineEvent.id.desc())
        .limit(limit)
    )
    cards = [
        RefusedCard(event.incident_id, chat_id, event.at, event.summary) for event, chat_id in rows
    ]
    return RefusedCards(cards, total)


async def build_card(
    session: AsyncSession, incident: Incident, policy: PolicySource | None = None
) -> CardView:
    """``policy``: the card names who may approve under it; without it, nobody is named."""
    approval = await session.scalar(
        select(Approval)
        .where(Approval.incident_id == incident.id)
        .order_by(Approval.created_at.desc())
        .limit(1)
    )
    firing = list(
        await session.scalars(
            select(Alert)
            .where(Alert.incident_id == incident.id, Alert.status == "firing")
            .order_by(Alert.starts_at, Alert.id)
        )
    )
    starts = [a.starts_at for a in firing if a.starts_at is not None]
    first = firing[0] if firing else None
    runbooks = (str(a.annotations.get("runbook_url") or "") for a in firing)
    # One alert's bad link does not hide another's good one.
    runbook = next((url for url in runbooks if url.lower().startswith(("http://", "https://"))), "")
    base = CardView(
        refire=await _refire(session, incident),
        firing_since=min(starts) if starts else None,
        source_url=first.generator_url if first else "",
        alertmanager_url=incident.external_url,
        runbook_url=runbook,
        related_case=_case_line(incident.related_case),
        incident_id=incident.id,
        incident_status=incident.status,
        severity=incident.severity,
        alertname=incident.alertname,
        summary=incident.summary,
        service=incident.service,
        namespace=incident.namespace,
        firing_count=incident.firing_count,
        alert_count=incident.alert_count,
        labels={str(k): str(v) for k, v in incident.labels.items()},
        action=incident.proposed_action or None,
        action_refusal=incident.action_refusal,
        acked_by=incident.acked_by,
        acked_at=incident.acked_at,
        silence=await latest_silence(session, incident.id),
        silenceable=may_silence(incident),
    )
    if approval is None:
        return base
    op = Operation.from_dict(approval.operation)
    roles, eligible = (
        policy.current().who_may_approve(op, Risk(approval.risk)) if policy else ([], [])
    )
    rejecter = await session.scalar(
        select(Signature).where(
            Signature.approval_id == approval.id, Signature.decision == "reject"
        )
    )
    execution = await session.get(Execution, approval.id)
    attempts: tuple[AttemptLine, ...] = ()
    if execution is not None:
        rows = await session.scalars(
            select(ExecutionAttempt)
            .where(ExecutionAttempt.approval_id == approval.id)
            .order_by(ExecutionAttempt.attempt)
        )
        attempts = tuple(AttemptLine(r.attempt, r.outcome, r.error, r.http_status) for r in rows)
    return replace(
        base,
        action=approval.action,
        action_refusal="",
        risk=approval.risk,
        blast_radius=_what_happens(op, approval),
        plan_warnings=_plan_warnings(approval),
        approvable=approvable(approval.plan),
        plan_pending_since=approval.created_at
        if approval.plan is None and approval.status == "pending"
        else None,
        approval_id=approval.id,
        approval_status=approval.status,
        required_approvals=approval.required_approvals,
        approvers=tuple(await approver_names(session, approval.id)),
        lapsed=await _lapsed(session, approval.id),
        rejected_by=f"@{rejecter.username}" if rejecter and rejecter.username else "",
        decision_note=approval.decision_note,
        expires_at=approval.expires_at,
        execution_status=execution.status if execution else None,
        attempts=attempts,
        max_attempts=execution.max_attempts if execution else 0,
        next_attempt_at=execution.next_attempt_at if execution else None,
        retry_delay_seconds=execution.retry_delay_seconds if execution else 0,
        result_detail=execution.result_detail if execution else "",
        duration_seconds=execution.duration_seconds if execution else None,
        verification_status=execution.verification_status if execution else None,
        verification_detail=execution.verification_detail if execution else "",
        record=await _record(session, incident, approval),
        related_case=_case_line(incident.related_case),
        auto_approved=approval.requested_by == AUTO_REQUESTER,
        approver_roles=tuple(roles),
        eligible=tuple(eligible),
        **agent_card_fields(approval),
    )


def _what_happens(op: Operation, approval: Approval) -> str:
    """The plan's account once it was read; before, or without it, what the kind does."""
    if approval.plan is None:
        if approval.status == "pending":
            return f"{blast_radius(op)} (reading the target…)"
        return blast_radius(op)
    plan = Plan.from_dict(approval.plan)
    match plan.state:
        case PlanState.READY:
            return plan.summary
        case PlanState.UNAVAILABLE:
            return f"{blast_radius(op)} (plan unavailable: {plan.summary})"
        case PlanState.REFUSED:
            return f"plan refused: {plan.summary}"


def _plan_warnings(approval: Approval) -> tuple[str, ...]:
    return Plan.from_dict(approval.plan).warnings if approval.plan else ()


# How far back the card counts a group's incidents ("3rd time in 24 h").
REFIRE_WINDOW = timedelta(hours=24)


async def _refire(session: AsyncSession, incident: Incident) -> RefireLine | None:
    """From facts fixed when the incident opened, so the line never changes on an edit."""
    if incident.previous_incident_id is None:
        return None
    previous = (
        await session.execute(
            select(
                Incident.resolved_at, Incident.chat_id, Incident.message_id, Incident.thread_id
            ).where(Incident.id == incident.previous_incident_id)
        )
    ).first()
    resolved_at = previous.resolved_at if previous else None
    card = (
        MessageRef(previous.chat_id, previous.message_id, previous.thread_id)
        if previous is not None and previous.message_id is not None
        else None
    )
    times = await session.scalar(
        select(func.count())
        .select_from(Incident)
        .where(
            Incident.group_key == incident.group_key,
            Incident.generation <= incident.generation,
            Incident.created_at >= incident.created_at - REFIRE_WINDOW,
        )
    )
    after = (incident.created_at - resolved_at).total_seconds() if resolved_at else 0.0
    return RefireLine(incident.previous_incident_id, after, int(times or 1), card)


async def _lapsed(session: AsyncSession, approval_id: str) -> tuple[tuple[str, str], ...]:
    rows = await session.scalars(
        select(Signature)
        .where(Signature.approval_id == approval_id, Signature.lapsed.is_not(None))
        .order_by(Signature.created_at, Signature.id)
    )
    return tuple(
        (f"@{s.username}" if s.username else f"id {s.user_id}", s.lapsed or "") for s in rows
    )


def _case_line(case: dict[str, Any] | None) -> str:
    if not case:
        return ""
    return f"{case.get('title', '')} ({case.get('incident_id', '')})"


async def _record(session: AsyncSession, incident: Incident, approval: Approval) -> str:
    """How this fix fared before against this kind of alert, if it was tried."""
    record = await record_in(session, signature(incident), approval.action)
    origin = approval.requested_by
    source = f"playbook #{origin.removeprefix(PLAYBOOK)}, " if origin.startswith(PLAYBOOK) else ""
    line = f"{source}{record_text(record)}" if record or source else ""
    if approval.agent:
        # The agent's own record with this kind of alert, beside everyone's.
        own = await record_in(
            session, proposer_signature(approval.agent, incident), approval.action
        )
        mine = f"agent {approval.agent}: {record_text(own)}"
        line = f"{line}; {mine}" if line else mine
    return line


async def result_view(
    session: AsyncSession, approval: Approval, execution: Execution, incident: Incident
) -> ResultView:
    return ResultView(
        incident_id=incident.id,
        action=approval.action,
        succeeded=execution.status == SUCCEEDED,
        detail=execution.result_detail,
        attempts=execution.attempts,
        duration_seconds=execution.duration_seconds,
        approvers=tuple(await approver_names(session, approval.id)),
        alertname=incident.alertname,
        service=incident.service,
        namespace=incident.namespace,
        approval_id=approval.id,
        undoable=execution.status == SUCCEEDED
        and inverse(Operation.from_dict(approval.operation), execution.context) is not None,
    )


class CaseFinder(Protocol):
    async def related_case(self, alertname: str, service: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class RequestedCard:
    incident_id: str
    card: MessageRef | None  # None: no such incident
    posted: bool  # posted for this request, else it was there already


@dataclass(frozen=True)
class _CardState:
    target: ChatTarget
    message_id: int | None
    view: CardView | None  # None: the card needs a slot of the chat's quota first
    unconfirmed: datetime | None  # when Telegram last left a post of it unconfirmed


class CardPublisher:
    def __init__(
        self,
        db: Database,
        chat: ChatPort,
        cases: CaseFinder | None = None,
        *,
        quota: CardQuota | None = None,
        unknown_card_wait: timedelta = UNKNOWN_CARD_WAIT,
        metrics: Metrics | None = None,
        policy: PolicySource | None = None,
        card_bound: Callable[[AsyncSession, Incident], Awaitable[None]] | None = None,
    ) -> None:
        """Without ``quota`` every card goes out as soon as the send budget allows; with
        ``policy`` a card names who may approve. ``card_bound`` is told the incident in the
        transaction that makes a posted message its card."""
        self._policy = policy
        self._card_bound = card_bound
        self._metrics = metrics or Metrics()
        self._db = db
        self._chat = chat
        self._cases = cases
        self._quota = quota
        self._unknown_card_wait = unknown_card_wait

    async def sync_card(self, job: ClaimedJob[IncidentJob]) -> None:
        """Post the incident's card if it has none yet, else edit it to the current state."""
        incident_id = job.payload.incident_id
        state = await self._card_state(incident_id)
        if state is not None and state.view is None:
            # The quota is asked before the card is built or its plan awaited: in a storm
            # most new incidents wait anyway, and their digest line needs neither. A slot
            # taken here stays taken while the plan is awaited.
            if not await self._card_turn(job.lease, incident_id):
                return
            state = await self._card_state(incident_id)
        if state is None:
            return
        assert state.view is not None
        view, target, message_id = state.view, state.target, state.message_id
        unconfirmed = state.unconfirmed
        if unconfirmed is not None and utcnow() < unconfirmed + self._unknown_card_wait:
            # Whichever job asks (a vote, the plan, a repeat): a card that may be in the chat
            # already is not posted again until the wait is over.
            raise RetryJob(unconfirmed + self._unknown_card_wait, "card delivery unknown")
        if message_id is not None:
            try:
                await self._chat.edit_card(
                    MessageRef(target.chat_id, message_id, target.thread_id), view
                )
            except ChatRejected as exc:
                log.warning("card_edit_rejected", incident_id=incident_id, error=str(exc))
            return
        if view.plan_pending_since is not None and utcnow() - view.plan_pending_since < PLAN_WAIT:
            raise RetryJob(utcnow() + PLAN_POLL, "the card waits for its action's plan")
        if self._cases is not None:
            view = await self._attach_related_case(job.lease, incident_id, view)
        await job.lease.ensure()
        try:
            ref = await self._chat.post_card(target, view)
        except ChatOutcomeUnknown as exc:
            # The card may be in the chat already; a tap on it makes it the incident's card.
            # Posting again at once would show two live cards, so wait before trying again.
            log.warning("card_delivery_unknown", incident_id=incident_id, error=str(exc))
            async with job.lease.transaction() as session:
                timeline.record(
                    session,
                    incident_id,
                    "card_delivery_unknown",
                    "Telegram did not confirm the card; it is posted again "
                    f"in {self._unknown_card_wait.total_seconds():g} s unless someone taps it",
                    status="warning",
                )
            raise RetryJob(utcnow() + self._unknown_card_wait, "card delivery unknown") from exc
        except ChatRejected as exc:
            # Recorded before it is counted: whoever sees the count finds it in /status.
            retry_at = await self._record_refusal(job.lease, incident_id, str(exc))
            self._metrics.card_refused(CHAT_GONE if isinstance(exc, ChatGone) else CHAT_REJECTED)
            log.error(
                "card_post_rejected",
                incident_id=incident_id,
                chat_id=target.chat_id,
                error=str(exc),
                retry_at=retry_at.isoformat() if retry_at else None,
            )
            if retry_at is not None:
                raise RetryJob(retry_at, "the chat refused the card") from exc
            return
        await self._bind(job.lease.transaction, incident_id, ref)

    async def _card_state(self, incident_id: str) -> _CardState | None:
        """The incident's card as it should look now; without a view when a first post must
        ask the chat's card quota first. None: no such incident."""
        # A read, not a write transaction: on SQLite it does not queue behind the writers of
        # a storm (plans, claims, the quota's decisions) for the card's many reads.
        async with self._db.read() as session:
            incident = await session.get(Incident, incident_id)
            if incident is None:
                return None
            target = ChatTarget(incident.chat_id, incident.thread_id)
            message_id = incident.message_id
            if self._quota is not None and message_id is None and incident.card_slot_at is None:
                return _CardState(target, None, None, None)
            view = await build_card(session, incident, self._policy)
            unconfirmed = (
                await session.scalar(
                    select(func.max(TimelineEvent.at)).where(
                        TimelineEvent.incident_id == incident_id,
                        TimelineEvent.kind == "card_delivery_unknown",
                    )
                )
                if message_id is None
                else None
            )
        return _CardState(target, message_id, view, unconfirmed)

    async def _record_refusal(self, lease: Lease, incident_id: str, error: str) -> datetime | None:
        """Put the refusal on the timeline; when to try again, or None after the last try."""
        async with lease.transaction() as session:
            earlier = int(
                await session.scalar(
                    select(func.count())
                    .select_from(TimelineEvent)
                    .where(
                        TimelineEvent.incident_id == incident_id,
                        TimelineEvent.kind == CARD_REFUSED,
                    )
                )
                or 0
            )
            wait = REFUSED_CARD_RETRIES[earlier] if earlier < len(REFUSED_CARD_RETRIES) else None
            then = (
                f"trying again in {wait.total_seconds() / 60:g} min"
                if wait is not None
                else "no more tries"
            )
            timeline.record(
                session,
                incident_id,
                CARD_REFUSED,
                f"the card could not be posted: {error}; {then}",
                status="error",
            )
        return utcnow() + wait if wait is not None else None

    async def _card_turn(self, lease: Lease, incident_id: str) -> bool:
        """Whether the chat's card quota lets this card out now; a card that waits is listed
        on the digest and its job comes back when a slot may be free."""
        assert self._quota is not None
        async with lease.transaction() as session:
            incident = await session.get(Incident, incident_id)
            if incident is None or incident.message_id is not None:
                return False  # a /card request posted it meanwhile; the next sync edits it
            if incident.status == "resolved" and await is_listed(session, incident_id):
                # Resolved while it waited: the digest says so, and a card would only spend
                # the budget the incidents still firing need. /card still posts it.
                await schedule_digest(session, incident.chat_id, utcnow())
                return False
            later = await self._quota.take_slot(session, incident, utcnow())
        if later is None:
            return True
        raise RetryJob(later, "the card waits for the chat's card quota")

    async def post_on_request(self, incident_id: str) -> RequestedCard:
        """``/card``: the incident's card now, ahead of new cards, unless it has one already.

        It is bound as the incident's card as a job's post would be, so taps on it decide and
        no second card follows; should a job's post win the race, this one becomes a pointer."""
        async with self._db.transaction() as session:
            incident = await session.get(Incident, incident_id)
            if incident is None:
                return RequestedCard(incident_id, None, posted=False)
            target = ChatTarget(incident.chat_id, incident.thread_id)
            if incident.message_id is not None:
                ref = MessageRef(target.chat_id, incident.message_id, target.thread_id)
                return RequestedCard(incident_id, ref, posted=False)
            view = await build_card(session, incident, self._policy)
        ref = await self._chat.post_card(target, view, on_request=True)
        live = await self._bind(self._db.transaction, incident_id, ref)
        return RequestedCard(incident_id, live or ref, posted=live is None)

    async def _bind(
        self,
        transaction: Callable[[], AbstractAsyncContextManager[AsyncSession]],
        incident_id: str,
        ref: MessageRef,
    ) -> MessageRef | None:
        """Make the posted message the incident's card; None when it is, else the card that
        was bound first (the posted message then points to it)."""
        retired: MessageRef | None = None
        async with transaction() as session:
            stored = await session.execute(
                update(Incident)
                .where(Incident.id == incident_id, Incident.message_id.is_(None))
                .values(
                    message_id=ref.message_id,
                    # A requested card counts against the chat's quota too.
                    card_slot_at=func.coalesce(Incident.card_slot_at, utcnow()),
                )
            )
            live = None
            if stored.rowcount != 1:  # type: ignore[attr-defined]
                # A tap made a message the card meanwhile: this one, tapped before its answer
                # arrived, or an earlier unconfirmed post, which makes this one a duplicate.
                adopted = await session.scalar(
                    select(Incident.message_id).where(Incident.id == incident_id)
                )
                live = adopted if adopted != ref.message_id else None
            else:
                timeline.record(
                    session, incident_id, "card_posted", f"alert card posted to chat {ref.chat_id}"
                )
                posted = await session.get(Incident, incident_id)
                if posted is not None:
                    if self._card_bound is not None:
                        await self._card_bound(session, posted)
                    if posted.retired_card_id is None:
                        self._metrics.card_posted((utcnow() - posted.created_at).total_seconds())
                    else:
                        retired = MessageRef(ref.chat_id, posted.retired_card_id, ref.thread_id)
                        posted.retired_card_id = None
        if retired is not None:
            # Cosmetic, so not a job of its own: should this edit be lost, a tap on the old
            # card's buttons is answered that they do not belong there, and changes nothing.
            try:
                await self._chat.retire_card(retired, ref)
            except ChatError as exc:
                log.warning("retired_card_edit_failed", incident_id=incident_id, error=str(exc))
        if live is not None:
            live_ref = MessageRef(ref.chat_id, live, ref.thread_id)
            with contextlib.suppress(ChatError):
                await self._chat.mark_duplicate(ref, incident_id, live_ref)
            log.warning("card_posted_twice", incident_id=incident_id, message_id=ref.message_id)
            return live_ref
        log.info(
            "card_posted", incident_id=incident_id, chat_id=ref.chat_id, message_id=ref.message_id
        )
        return None

    async def _attach_related_case(
        self, lease: Lease, incident_id: str, view: CardView
    ) -> CardView:
        """Before the first post: the closest past case, if any (it counts as referenced)."""
        assert self._cases is not None
        case = await self._cases.related_case(view.alertname, view.service)
        if case is None:
            return view
        async with lease.transaction() as session:
            await session.execute(
                update(Incident).where(Incident.id == incident_id).values(related_case=case)
            )
        return replace(view, related_case=_case_line(case))

    async def publish_result(self, job: ClaimedJob[ResultJob]) -> None:
        """Final card edit, then the reply under the original alert; each at most once."""
        approval_id = job.payload.approval_id
        async with self._db.transaction() as session:
            record = await load_execution(session, approval_id)
            if record is None:
                return
            approval, execution, incident = record.approval, record.execution, record.incident
            view = await build_card(session, incident, self._policy)
            result = await result_view(session, approval, execution, incident)
            target = ChatTarget(incident.chat_id, incident.thread_id)
            card_id = incident.message_id
            # A reply Telegram may have shown already is not sent a second time.
            settled = execution.result_message_id is not None or execution.result_delivery_unknown
            # An auto-approved fix can finish before its card is posted: the reply waits for
            # the card it belongs under, as long as a card job is still on its way.
            card_coming = (
                card_id is None
                and not settled
                and await is_queued(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
            )
        if card_coming:
            raise RetryJob(utcnow() + RESULT_WAITS_FOR_CARD, "the result waits for its card")
        if card_id is not None:
            try:
                await self._chat.edit_card(
                    MessageRef(target.chat_id, card_id, target.thread_id), view
                )
            except ChatRejected as exc:
                log.warning("card_edit_rejected", incident_id=incident.id, error=str(exc))
        if settled:
            return
        await job.lease.ensure()
        try:
            ref = await self._chat.send_result(target, card_id, result)
        except ChatOutcomeUnknown as exc:
            log.warning("result_delivery_unknown", approval_id=approval_id, error=str(exc))
            async with job.lease.transaction() as session:
                await session.execute(
                    update(Execution)
                    .where(Execution.approval_id == approval_id)
                    .values(result_delivery_unknown=True)
                )
                timeline.record(
                    session,
                    incident.id,
                    "result_delivery_unknown",
                    "Telegram did not confirm the result reply; it is not sent again "
                    "(the card shows the result)",
                    status="warning",
                )
            return
        except ChatRejected as exc:
            log.error("result_post_rejected", approval_id=approval_id, error=str(exc))
            async with job.lease.transaction() as session:
                timeline.record(
                    session,
                    incident.id,
                    "result_failed",
                    f"the result could not be posted: {exc}",
                    status="error",
                )
            return
        async with job.lease.transaction() as session:
            await session.execute(
                update(Execution)
                .where(Execution.approval_id == approval_id)
                .values(result_message_id=ref.message_id)
            )
            timeline.record(
                session,
                incident.id,
                "result_posted",
                f"result posted{' in the alert thread' if card_id else ''}",
            )
        log.info(
            "result_posted",
            approval_id=approval_id,
            incident_id=incident.id,
            succeeded=result.succeeded,
            message_id=ref.message_id,
        )
