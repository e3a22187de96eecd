"""Writers that meet on one incident never deadlock: a tap races a changed proposal and a
resolving alert, on the real PostgreSQL, and every one of them finishes.

A tap locks the card's rows and then inserts its signature and timeline event, whose foreign
keys take a share lock on the incident; a proposal or an alert locks the incident and then the
approval. Both orders meet often enough in these loops that a lock mode or an order that lets
them wait on each other fails here.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select, update

from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import Proposal, Tapper
from opsgate.services.chat import MessageRef
from opsgate.services.incidents import ApiProposal
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Incident
from tests.builders import ALICE, alert, am_payload
from tests.integration.test_storage import CARD, services

ROUNDS = 25
RESTART = "kubectl rollout restart deployment/checkout -n shop"
LABELS = {"alertname": "CheckoutDown", "namespace": "shop", "service": "checkout"}


def _proposal(action: str, incident_id: str | None = None) -> ApiProposal:
    return ApiProposal(
        proposal=Proposal(action=action, requested_by="agent:holmes", agent="holmes"),
        incident_id=incident_id,
        labels=LABELS if incident_id is None else {},
    )


async def _make_card(database: Database, message_id: int) -> None:
    async with database.transaction() as session:
        await session.execute(
            update(Incident)
            .where(Incident.message_id.is_(None))
            .values(chat_id=CARD.chat_id, message_id=message_id)
        )


async def test_a_tap_and_a_changed_proposal_on_one_card(database: Database) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    alice = Tapper(ALICE, "alice")
    for round_ in range(ROUNDS):
        first = await incidents.propose_via_api(_proposal(RESTART))
        card = MessageRef(CARD.chat_id, 1000 + round_)
        await _make_card(database, card.message_id)
        replicas = f"kubectl scale deployment/checkout -n shop --replicas={round_ + 2}"
        tapped, changed = await asyncio.gather(
            approvals.decide(first.approval.id, alice, True, origin=card),
            incidents.propose_via_api(_proposal(replicas, first.incident_id)),
        )
        # Either order is right: the tap signed the first proposal before it was replaced,
        # or it came too late for it.
        assert "(1/2)" in tapped.text or "superseded" in tapped.text, tapped.text
        assert changed.superseded == first.approval.id
    async with database.read() as session:
        pending = list(
            await session.scalars(select(Approval.id).where(Approval.status == "pending"))
        )
    assert len(pending) == ROUNDS


async def test_a_tap_and_the_alert_resolving(database: Database) -> None:
    approvals, incidents = services(database, quorum={"medium": 2})
    alice = Tapper(ALICE, "alice")
    for round_ in range(ROUNDS):
        group = f'{{}}:{{alertname="CheckoutErrors",round="{round_}"}}'
        await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload(group)))
        async with database.read() as session:
            approval_id = await session.scalar(
                select(Approval.id)
                .join(Incident, Incident.id == Approval.incident_id)
                .where(Incident.group_key == group)
            )
        assert approval_id is not None
        card = MessageRef(CARD.chat_id, 2000 + round_)
        await _make_card(database, card.message_id)
        resolved = am_payload(group, alert(status="resolved"))
        tapped, _ = await asyncio.gather(
            approvals.decide(approval_id, alice, True, origin=card),
            incidents.ingest_alertmanager(AmPayload.model_validate(resolved)),
        )
        assert "(1/2)" in tapped.text or "cancelled" in tapped.text, tapped.text
    async with database.read() as session:
        statuses = set(await session.scalars(select(Approval.status)))
    assert statuses == {"cancelled"}


async def test_a_tap_adopting_the_card_and_a_changed_proposal(database: Database) -> None:
    """A card whose post was never confirmed is adopted by its first tap, which updates the
    incident: the tap must take the incident's lock before the approval's, as the proposal
    does."""
    approvals, incidents = services(database, quorum={"medium": 2})
    alice = Tapper(ALICE, "alice")
    for round_ in range(ROUNDS):
        first = await incidents.propose_via_api(_proposal(RESTART))
        async with database.transaction() as session:
            await session.execute(
                update(Incident)
                .where(Incident.id == first.incident_id)
                .values(chat_id=CARD.chat_id, message_id=None)
            )
        card = MessageRef(CARD.chat_id, 3000 + round_)
        replicas = f"kubectl scale deployment/checkout -n shop --replicas={round_ + 2}"
        tapped, changed = await asyncio.gather(
            approvals.decide(first.approval.id, alice, True, origin=card, origin_offers_it=True),
            incidents.propose_via_api(_proposal(replicas, first.incident_id)),
        )
        assert "(1/2)" in tapped.text or "superseded" in tapped.text, tapped.text
        assert changed.superseded == first.approval.id
