"""A tap decides only from the incident's own card, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import (
    DUPLICATE,
    NOT_HERE,
    ApprovalService,
    DuplicateCard,
    RetryPolicy,
    Tapper,
)
from opsgate.services.chat import ChatTarget, MessageRef
from opsgate.services.incidents import IncidentService
from opsgate.services.job_kinds import JobKind
from opsgate.services.playbooks import PlaybookService
from opsgate.services.routing import Router
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Incident, Job, Signature, TimelineEvent
from tests.builders import ALICE, BOB, am_payload, policy_source

CHAT = -100123
OTHER_CHAT = -100999
CARD_ID = 10
ALICE_TAPS = Tapper(ALICE, "alice")


def incident_service(db: Database, *, quorum: int = 1) -> tuple[ApprovalService, IncidentService]:
    """Incidents of CHAT, whose proposed fixes need ``quorum`` approvals."""
    approvals = ApprovalService(
        db,
        policy_source({"medium": quorum}),
        ttl=timedelta(hours=2),
        retry=RetryPolicy(2, 30.0),
    )
    incidents = IncidentService(
        db,
        approvals,
        router=Router(policy_source(), ChatTarget(CHAT)),
        playbooks=PlaybookService(db),
        policy=policy_source(),
    )
    return approvals, incidents


async def open_incident(
    db: Database, *, card_id: int | None, quorum: int = 1
) -> tuple[ApprovalService, Approval, Incident]:
    """An incident with a pending approval, whose card is ``card_id`` (None: never stored)."""
    approvals, incidents = incident_service(db, quorum=quorum)
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with db.transaction() as session:
        await session.execute(update(Incident).values(message_id=card_id))
        approval = await session.scalar(select(Approval))
        incident = await session.scalar(select(Incident))
    assert approval is not None and incident is not None
    return approvals, approval, incident


async def signatures(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Signature)) or 0)


async def test_a_tap_on_the_card_decides(database: Database) -> None:
    approvals, approval, _ = await open_incident(database, card_id=CARD_ID)
    outcome = await approvals.decide(
        approval.id, ALICE_TAPS, True, origin=MessageRef(CHAT, CARD_ID), origin_offers_it=True
    )
    assert outcome.changed and "executing" in outcome.text
    assert not outcome.adopted and outcome.duplicate is None


async def test_taps_from_elsewhere_change_nothing(database: Database) -> None:
    approvals, approval, _ = await open_incident(database, card_id=CARD_ID)
    for origin in (MessageRef(OTHER_CHAT, CARD_ID), None):
        outcome = await approvals.decide(
            approval.id, ALICE_TAPS, True, origin=origin, origin_offers_it=True
        )
        assert (outcome.text, outcome.alert, outcome.changed) == (NOT_HERE, True, False)
        assert outcome.duplicate is None
    assert await signatures(database) == 0


@pytest.mark.parametrize("card_id", [CARD_ID, None], ids=["card stored", "card not stored"])
async def test_forged_data_on_a_message_without_the_button_changes_nothing(
    database: Database, card_id: int | None
) -> None:
    approvals, approval, _ = await open_incident(database, card_id=card_id)
    # Another message of the incident's chat: neither a duplicate nor a card to adopt.
    outcome = await approvals.decide(
        approval.id, ALICE_TAPS, True, origin=MessageRef(CHAT, 42), origin_offers_it=False
    )
    assert (outcome.text, outcome.alert, outcome.changed) == (NOT_HERE, True, False)
    assert outcome.duplicate is None and not outcome.adopted
    async with database.transaction() as session:
        stored = await session.scalar(select(Incident.message_id))
    assert stored == card_id
    assert await signatures(database) == 0


async def test_a_stale_tap_on_the_card_is_told_the_state(database: Database) -> None:
    approvals, approval, _ = await open_incident(database, card_id=CARD_ID)
    card = MessageRef(CHAT, CARD_ID)
    await approvals.decide(approval.id, ALICE_TAPS, True, origin=card, origin_offers_it=True)
    # The edit removed the keyboard; a client that missed it still taps the card.
    late = await approvals.decide(approval.id, Tapper(BOB, "bob"), True, origin=card)
    assert late.alert and "already approved" in late.text


async def test_a_tap_on_a_duplicate_card_points_to_the_card(database: Database) -> None:
    approvals, approval, incident = await open_incident(database, card_id=CARD_ID)
    duplicate = MessageRef(CHAT, CARD_ID - 1)
    outcome = await approvals.decide(
        approval.id, ALICE_TAPS, False, origin=duplicate, origin_offers_it=True
    )
    assert (outcome.text, outcome.alert, outcome.changed) == (DUPLICATE, True, False)
    assert outcome.duplicate == DuplicateCard(
        incident.id, duplicate, MessageRef(CHAT, CARD_ID, incident.thread_id)
    )
    assert await signatures(database) == 0
    async with database.transaction() as session:
        status = await session.scalar(select(Approval.status))
    assert status == "pending"


async def test_the_first_tap_adopts_a_card_that_was_never_stored(database: Database) -> None:
    approvals, approval, incident = await open_incident(database, card_id=None)
    outcome = await approvals.decide(
        approval.id, ALICE_TAPS, True, origin=MessageRef(CHAT, 7), origin_offers_it=True
    )
    assert outcome.adopted and outcome.changed and "executing" in outcome.text
    async with database.transaction() as session:
        stored = await session.scalar(select(Incident.message_id))
        kinds = list(await session.scalars(select(TimelineEvent.kind)))
        syncs = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == JobKind.SYNC_CARD.value, Job.key == incident.id)
        )
    assert stored == 7
    assert "card_adopted" in kinds
    assert syncs

    # From now on that message is the card, and another one is a duplicate of it.
    again = await approvals.decide(approval.id, ALICE_TAPS, True, origin=MessageRef(CHAT, 7))
    assert not again.adopted and "already approved" in again.text
    other = await approvals.decide(
        approval.id, ALICE_TAPS, True, origin=MessageRef(CHAT, 8), origin_offers_it=True
    )
    assert other.duplicate is not None and other.duplicate.live.message_id == 7


async def test_racing_taps_on_unstored_cards_adopt_exactly_one(database: Database) -> None:
    approvals, approval, _ = await open_incident(database, card_id=None, quorum=2)
    tappers = [ALICE_TAPS, Tapper(BOB, "bob")]
    outcomes = await asyncio.gather(
        *(
            approvals.decide(
                approval.id,
                tappers[i % 2],
                True,
                origin=MessageRef(CHAT, 100 + i),
                origin_offers_it=True,
            )
            for i in range(20)
        )
    )
    async with database.transaction() as session:
        stored = await session.scalar(select(Incident.message_id))
        adopted = await session.scalar(
            select(func.count())
            .select_from(TimelineEvent)
            .where(TimelineEvent.kind == "card_adopted")
        )
    assert adopted == 1
    [winner] = [o for o in outcomes if o.adopted]
    assert winner.changed and winner.duplicate is None
    losers = [o for o in outcomes if not o.adopted]
    assert all(o.duplicate is not None and o.duplicate.live.message_id == stored for o in losers)
    assert await signatures(database) == 1
