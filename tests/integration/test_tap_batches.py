"""Concurrent taps on one card go in fewer transactions, and each is judged as if alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, func, select

from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import (
    ALREADY_SIGNED,
    APPROVE_RECEIVED,
    EXPIRED_TEXT,
    PLAN_UNREAD,
    REJECT_RECEIVED,
    REQUESTED_IT,
    ApprovalService,
    TapAnswer,
    Tapper,
)
from opsgate.services.chat import MessageRef
from opsgate.services.operation_specs import Plan, PlanState
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    Incident,
    Signature,
    TimelineEvent,
    utcnow,
)
from tests.builders import ALICE, BOB, CAROL, alert, am_payload
from tests.integration.test_storage import CARD, services

STRANGER = 999
OTHER_CARD = MessageRef(CARD.chat_id, CARD.message_id + 1)


@contextmanager
def commits(database: Database) -> Iterator[list[object]]:
    seen: list[object] = []

    def on_commit(conn: object) -> None:
        seen.append(conn)

    event.listen(database.engine.sync_engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "commit", on_commit)


async def test_a_burst_of_taps_is_decided_in_fewer_transactions_with_the_same_answers(
    database: Database,
) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.read() as session:
        approval_id = await session.scalar(select(Approval.id))
    assert approval_id is not None
    # Alice, Bob and Carol may approve; the stranger may not. Quorum 2.
    tappers = [Tapper(ALICE, "alice"), Tapper(STRANGER, "eve"), Tapper(BOB, "bob")] * 10
    tappers.append(Tapper(CAROL, "carol"))
    with commits(database) as seen:
        outcomes = await asyncio.gather(
            *(
                approvals.decide(approval_id, t, True, origin=CARD, origin_offers_it=True)
                for t in tappers
            )
        )
    assert len(seen) < len(tappers)

    # Judged in arrival order, each on what the ones before it left: exactly the answers the
    # same taps get one after another on another card.
    other = await incidents.ingest_alertmanager(
        AmPayload.model_validate(
            am_payload('{}:{alertname="Other"}', alert("fp-other", alertname="Other"))
        )
    )
    async with database.read() as session:
        other_id = await session.scalar(
            select(Approval.id).where(Approval.incident_id == other.incident_id)
        )
    assert other_id is not None
    one_by_one = [
        await approvals.decide(other_id, t, True, origin=OTHER_CARD, origin_offers_it=True)
        for t in tappers
    ]
    assert [o.text for o in outcomes] == [o.text for o in one_by_one]
    texts = [o.text for o in outcomes]
    assert texts[:3] == [
        "Approval recorded (1/2).",
        "Not allowed. Your Telegram id 999 is not in the opsgate policy.",
        "Approved: quorum reached, executing now.",
    ]
    assert set(texts[3:]) == {"Too late: this request is already approved."}
    async with database.read() as session:
        signatures = await session.scalar(select(func.count()).select_from(Signature))
        signed = await session.scalar(
            select(func.count())
            .select_from(TimelineEvent)
            .where(TimelineEvent.kind == "approval_signed")
        )
        status = await session.scalar(select(Approval.status).where(Approval.id == approval_id))
    assert (signatures, signed, status) == (4, 4, "approved")


@contextmanager
def statements(database: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(database.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", on_execute)


async def one_card(
    database: Database, quorum: int, plan: PlanState | None = PlanState.READY
) -> tuple[ApprovalService, str]:
    """The approval service and the id of one pending approval, whose card a tap from
    ``CARD`` becomes, with its plan read as ``plan`` (None: not read yet)."""
    approvals, incidents = services(database, quorum={"medium": quorum})
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.read() as session:
        approval_id = await session.scalar(select(Approval.id))
    assert approval_id is not None
    if plan is not None:
        await read_plan(database, approvals, approval_id, plan)
    return approvals, approval_id


async def read_plan(
    database: Database, approvals: ApprovalService, approval_id: str, state: PlanState
) -> None:
    """What the plan job stores once it has asked the cluster."""
    async with database.transaction() as session:
        approval = await session.get(Approval, approval_id, with_for_update=True)
        assert approval is not None
        approval.plan = Plan(state, "2 pods replaced, one rollout").to_dict()
        await approvals.bind_plan(session, approval)


async def test_taps_decided_together_read_their_card_once(database: Database) -> None:
    approvals, approval_id = await one_card(database, 40)
    # A first tap alone, so the burst after it is one batch behind it.
    first = approvals.decide(
        approval_id, Tapper(ALICE, "alice"), True, origin=CARD, origin_offers_it=True
    )
    burst = [Tapper(BOB, "bob"), Tapper(CAROL, "carol")] + [
        Tapper(STRANGER + n, f"eve{n}") for n in range(20)
    ]
    with statements(database) as seen:
        outcomes = await asyncio.gather(
            first,
            *(
                approvals.decide(approval_id, t, True, origin=CARD, origin_offers_it=True)
                for t in burst
            ),
        )
    assert [o.text for o in outcomes[:3]] == [
        "Approval recorded (1/40).",
        "Approval recorded (2/40).",
        "Approval recorded (3/40).",
    ]
    # Two transactions (the first tap's, then the burst's): each reads the approval, its
    # incident and its signatures once, however many taps it decides.
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    locks = [s for s in reads if "FROM approvals" in s and "incidents" not in s]
    assert len(locks) == 2, locks
    assert len(reads) < len(burst), reads


async def card_posted(
    database: Database, quorum: int, plan: PlanState | None = PlanState.READY
) -> tuple[ApprovalService, str]:
    """As :func:`one_card`, with ``CARD`` stored as the incident's card."""
    approvals, approval_id = await one_card(database, quorum, plan)
    async with database.transaction() as session:
        incident = await session.scalar(select(Incident))
        assert incident is not None and incident.chat_id == CARD.chat_id
        incident.message_id = CARD.message_id
    return approvals, approval_id


async def test_a_tap_the_policy_allows_is_answered_without_a_read(database: Database) -> None:
    approvals, approval_id = await card_posted(database, 2)
    first = await approvals.foreseen_answer(approval_id, Tapper(ALICE, "alice"), True, CARD)
    assert first == TapAnswer(APPROVE_RECEIVED, alert=False)
    with statements(database) as seen:
        second = await approvals.foreseen_answer(approval_id, Tapper(BOB, "bob"), False, CARD)
    assert second == TapAnswer(REJECT_RECEIVED, alert=False)
    # The approval's terms were read once, for the first tap.
    assert seen == []
    # Nor for a tapper the policy refuses, whatever the card's state.
    stranger = TapAnswer("Not allowed. Your Telegram id 999 is not in the opsgate policy.", True)
    with statements(database) as seen:
        refused = await approvals.foreseen_answer(approval_id, Tapper(STRANGER, "eve"), True, CARD)
    assert (refused, seen) == (stranger, [])
    async with database.transaction() as session:
        approval = await session.get(Approval, approval_id)
        assert approval is not None
        approval.status = "rejected"
    late = await approvals.foreseen_answer(approval_id, Tapper(STRANGER, "eve"), True, CARD)
    assert late == stranger


async def test_a_card_bound_to_its_message_has_its_first_tap_answered_without_a_read(
    database: Database,
) -> None:
    approvals, approval_id = await card_posted(database, 2)
    async with database.transaction() as session:
        incident = await session.scalar(select(Incident))
        assert incident is not None
        await approvals.card_bound(session, incident)
    with statements(database) as seen:
        first = await approvals.foreseen_answer(approval_id, Tapper(ALICE, "alice"), True, CARD)
        # The card's message, as bound: a tap from another one is still decided first.
        other = await approvals.foreseen_answer(approval_id, Tapper(BOB, "bob"), True, OTHER_CARD)
    assert (first, other, seen) == (TapAnswer(APPROVE_RECEIVED, alert=False), None, [])


async def test_a_closed_approval_is_not_kept_when_its_card_is_bound(database: Database) -> None:
    approvals, approval_id = await card_posted(database, 2)
    async with database.transaction() as session:
        approval = await session.get(Approval, approval_id)
        assert approval is not None
        approval.status = "rejected"
        incident_id = approval.incident_id
    async with database.transaction() as session:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        await approvals.card_bound(session, incident)
    late = await approvals.foreseen_answer(approval_id, Tapper(ALICE, "alice"), True, CARD)
    assert late == TapAnswer("Too late: this request is already rejected.", alert=True)


async def test_a_tap_from_another_message_is_not_answered_before_its_decision(
    database: Database,
) -> None:
    approvals, approval_id = await one_card(database, 2)
    alice = Tapper(ALICE, "alice")
    # No card stored yet (its post was never confirmed): only the decision can adopt one.
    assert await approvals.foreseen_answer(approval_id, alice, True, CARD) is None
    adopted = await approvals.decide(approval_id, alice, True, origin=CARD, origin_offers_it=True)
    assert adopted.adopted
    bob = Tapper(BOB, "bob")
    assert await approvals.foreseen_answer(approval_id, bob, True, CARD) == TapAnswer(
        APPROVE_RECEIVED, alert=False
    )
    # A duplicate of the card, or a tap whose message Telegram did not give.
    assert await approvals.foreseen_answer(approval_id, bob, True, OTHER_CARD) is None
    assert await approvals.foreseen_answer(approval_id, bob, True, None) is None


async def test_an_approve_before_the_card_shows_a_plan_is_answered_by_its_decision(
    database: Database,
) -> None:
    approvals, approval_id = await card_posted(database, 2, plan=PlanState.UNAVAILABLE)
    alice, bob = Tapper(ALICE, "alice"), Tapper(BOB, "bob")
    # The cluster could not be read: only the decision says Approve approves nothing yet.
    assert await approvals.foreseen_answer(approval_id, alice, True, CARD) is None
    refused = await approvals.decide(approval_id, alice, True, origin=CARD, origin_offers_it=True)
    assert (refused.text, refused.signed) == (PLAN_UNREAD, False)
    # Reject does not wait for the plan.
    assert await approvals.foreseen_answer(approval_id, bob, False, CARD) == TapAnswer(
        REJECT_RECEIVED, alert=False
    )
    # Once read, the next decision keeps the plan with the terms, and taps are answered first.
    await read_plan(database, approvals, approval_id, PlanState.READY)
    assert await approvals.foreseen_answer(approval_id, alice, True, CARD) is None
    signed = await approvals.decide(approval_id, alice, True, origin=CARD, origin_offers_it=True)
    assert signed.signed
    assert await approvals.foreseen_answer(approval_id, bob, True, CARD) == TapAnswer(
        APPROVE_RECEIVED, alert=False
    )


async def test_what_never_changes_is_refused_before_the_decision(database: Database) -> None:
    approvals, approval_id = await card_posted(database, 2)
    async with database.transaction() as session:
        approval = await session.get(Approval, approval_id)
        assert approval is not None
        approval.requester_user_id = ALICE
    alice = Tapper(ALICE, "alice")
    requested = await approvals.foreseen_answer(approval_id, alice, True, CARD)
    assert requested == TapAnswer(REQUESTED_IT, alert=True)
    # The requester may still reject their own request.
    withdrawn = await approvals.foreseen_answer(approval_id, alice, False, CARD)
    assert withdrawn == TapAnswer(REJECT_RECEIVED, alert=False)


async def test_a_tap_after_the_window_closed_is_told_so_before_the_decision(
    database: Database,
) -> None:
    approvals, approval_id = await card_posted(database, 2)
    async with database.transaction() as session:
        approval = await session.get(Approval, approval_id)
        assert approval is not None
        approval.expires_at = utcnow() - timedelta(seconds=1)
    bob = Tapper(BOB, "bob")
    assert await approvals.foreseen_answer(approval_id, bob, True, CARD) == TapAnswer(
        EXPIRED_TEXT, alert=True
    )
    outcome = await approvals.decide(approval_id, bob, True, origin=CARD, origin_offers_it=True)
    assert outcome.text == EXPIRED_TEXT


async def test_a_burst_on_a_card_nobody_tapped_yet_reads_its_terms_once(
    database: Database,
) -> None:
    approvals, approval_id = await card_posted(database, 2)
    burst = [Tapper(ALICE, "alice"), Tapper(BOB, "bob"), Tapper(CAROL, "carol")] * 10
    with statements(database) as seen:
        answers = await asyncio.gather(
            *(approvals.foreseen_answer(approval_id, t, True, CARD) for t in burst),
            approvals.foreseen_answer(approval_id, Tapper(STRANGER, "eve"), True, CARD),
        )
    assert answers[:-1] == [TapAnswer(APPROVE_RECEIVED, alert=False)] * len(burst)
    assert answers[-1] == TapAnswer(
        "Not allowed. Your Telegram id 999 is not in the opsgate policy.", alert=True
    )
    # One read of the approval (and its incident, for the card) for the whole burst, however
    # many taps arrive before it ends, the stranger's included.
    terms = [s for s in seen if "FROM approvals" in s and "approvals.operation" in s]
    assert len(terms) == 1, seen
    assert [s.split()[0] for s in seen if s != "BEGIN"] == ["SELECT", "SELECT"], seen


async def test_a_second_approval_by_one_signer_is_told_so_before_its_decision(
    database: Database,
) -> None:
    approvals, approval_id = await card_posted(database, 3)
    alice, bob = Tapper(ALICE, "alice"), Tapper(BOB, "bob")
    for tapper in (alice, bob):
        outcome = await approvals.decide(
            approval_id, tapper, True, origin=CARD, origin_offers_it=True
        )
        assert outcome.signed
    # Bob's decision read the card again; Alice's signature is still known.
    assert await approvals.foreseen_answer(approval_id, alice, True, CARD) == TapAnswer(
        ALREADY_SIGNED, alert=True
    )
    # She may still reject.
    assert await approvals.foreseen_answer(approval_id, alice, False, CARD) == TapAnswer(
        REJECT_RECEIVED, alert=False
    )


async def test_once_the_quorum_is_met_a_late_tap_is_told_so_before_its_decision(
    database: Database,
) -> None:
    approvals, approval_id = await card_posted(database, 1)
    alice, bob, carol = Tapper(ALICE, "alice"), Tapper(BOB, "bob"), Tapper(CAROL, "carol")
    claimed = await approvals.decide(approval_id, alice, True, origin=CARD, origin_offers_it=True)
    assert claimed.signed
    # A tap decided after the claim reads the closed approval; its terms are not kept again.
    await approvals.decide(approval_id, bob, True, origin=CARD, origin_offers_it=True)
    late = TapAnswer("Too late: this request is already approved.", alert=True)
    assert await approvals.foreseen_answer(approval_id, carol, True, CARD) == late
    assert await approvals.foreseen_answer(approval_id, carol, False, CARD) == late
