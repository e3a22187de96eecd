"""Alert in -> card out -> tap -> Kubernetes changed -> card edited -> reply in the thread."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select

from opsgate.bot.callback_data import CardAction, encode
from opsgate.services.approvals import ALREADY_SIGNED, APPROVE_RECEIVED, REJECT_RECEIVED
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, TimelineEvent
from tests.builders import (
    ALICE,
    BOB,
    CAROL,
    MALLORY,
    VIEWER,
    alert,
    am_payload,
    decision_buttons,
    policy,
)
from tests.e2e.rig import CHAT_ID, Rig

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def approve_data(message: object) -> str:
    data = [d for _text, d in message.buttons if d and d.startswith("v1:ap:")]  # type: ignore[attr-defined]
    assert data, "the card offers no Approve button"
    return data[0]


def real_writes(rig: Rig, method: str = "PATCH") -> list[object]:
    return [r for r in rig.kube.requests if r.method == method and not r.dry_run]


async def test_alert_to_restart_end_to_end(rig: Rig) -> None:
    response = await rig.post_alert(am_payload())
    assert response.status_code == 200
    incident_id = response.json()["incident_id"]

    card = await rig.wait_card()
    assert "CheckoutErrors" in card.plain_text
    assert incident_id in card.plain_text
    assert "kubectl rollout restart deployment/checkout -n shop" in card.plain_text
    assert "Approvals 0/1" in card.plain_text
    assert [text for text, _ in decision_buttons(card)] == ["✅ Approve", "❌ Reject"]

    alice = rig.telegram.user(ALICE, "alice")
    query = rig.telegram.tap(CHAT_ID, card.message_id, alice, approve_data(card))
    answer = await rig.telegram.wait_answer(query)
    # Answered before it is decided; the card says what the tap did.
    assert answer.text == APPROVE_RECEIVED and not answer.show_alert

    reply = await rig.wait_reply(card.message_id)
    assert "Succeeded" in reply.plain_text
    assert "@alice" in reply.plain_text
    deployment = rig.kube.get("deployments", "shop", "checkout")
    assert deployment is not None
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert RESTARTED_AT in annotations

    final = await rig.wait_text(card.message_id, "Done")
    assert decision_buttons(final) == []
    # The plan's dry run when proposed, the executor's just before the call, then exactly one
    # real write.
    patches = [r for r in rig.kube.requests if r.method == "PATCH"]
    assert [r.dry_run for r in patches] == [True, True, False]

    # The timeline is written in the same transactions as the facts; ask until the last one,
    # recorded just after the reply went out, is there too.
    for _ in range(40):
        asked = rig.telegram.send_text(CHAT_ID, alice, f"/timeline {incident_id}")
        timeline = (await rig.wait_reply(asked.message_id)).plain_text
        if "result_posted" in timeline:
            break
        await asyncio.sleep(0.05)
    for step in (
        "alert_received",
        "approval_requested",
        "card_posted",
        "approval_signed",
        "approval_granted",
        "execution_started",
        "execution_succeeded",
        "result_posted",
    ):
        assert step in timeline
    assert "@alice" in timeline


async def test_repeated_payloads_update_one_card_and_resolve_closes_it(rig: Rig) -> None:
    group = '{}:{alertname="CheckoutErrors"}'
    await rig.post_alert(am_payload(group, alert("a")))
    card = await rig.wait_card()
    await rig.post_alert(am_payload(group, alert("a")))
    await rig.post_alert(am_payload(group, alert("a"), alert("b")))
    await rig.wait_text(card.message_id, "2/2 firing")
    await rig.post_alert(
        am_payload(group, alert("a", status="resolved"), alert("b", status="resolved"))
    )
    closed = await rig.wait_text(card.message_id, "RESOLVED")
    assert "alert resolved before approval" in closed.plain_text
    assert closed.buttons == []
    assert len(rig.cards()) == 1


async def test_unauthorised_and_self_approval_taps_change_nothing(rig: Rig) -> None:
    response = await rig.client.post(
        "/api/v1/approvals",
        json={
            "action": "kubectl scale deployment/checkout --replicas=4 -n shop",
            "requested_by": "@alice",
            "labels": {"alertname": "CheckoutLatency", "namespace": "shop"},
            "description": "p95 above SLO",
        },
    )
    assert response.status_code == 201, response.text
    card = await rig.wait_card()
    data = approve_data(card)
    for user_id, name, expected in (
        (MALLORY, "mallory", "not in the opsgate policy"),
        (VIEWER, "vic", "do not allow"),
        (ALICE, "alice", "someone else has to approve"),
    ):
        query = rig.telegram.tap(CHAT_ID, card.message_id, rig.telegram.user(user_id, name), data)
        answer = await rig.telegram.wait_answer(query)
        assert answer.show_alert and expected in answer.text
    assert real_writes(rig) == []
    assert "Approvals 0/1" in rig.telegram.message(CHAT_ID, card.message_id).plain_text

    query = rig.telegram.tap(CHAT_ID, card.message_id, rig.telegram.user(BOB, "bob"), data)
    assert (await rig.telegram.wait_answer(query)).text == APPROVE_RECEIVED
    await rig.wait_reply(card.message_id)
    scaled = rig.kube.get("deployments", "shop", "checkout")
    assert scaled is not None and scaled["spec"]["replicas"] == 4


async def test_a_refused_tap_is_answered_while_votes_hold_the_card(rig: Rig) -> None:
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    data = approve_data(card)
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            # A vote in progress: the approval's row lock (PostgreSQL) or the database's
            # write lock (SQLite), held until the end of the block.
            await session.scalar(select(Approval).with_for_update())
            query = rig.telegram.tap(
                CHAT_ID, card.message_id, rig.telegram.user(MALLORY, "mallory"), data
            )
            answer = await rig.telegram.wait_answer(query, timeout=10)
            assert answer.show_alert and "not in the opsgate policy" in answer.text

        # Once the lock is free, the refusal is on the record as before.
        async def refused() -> bool:
            async with db.read() as session:
                kinds = (await session.scalars(select(TimelineEvent.kind))).all()
            return "tap_refused" in kinds

        for _ in range(100):
            if await refused():
                break
            await asyncio.sleep(0.05)
        assert await refused()
    finally:
        await db.dispose()
    assert "Approvals 0/1" in rig.telegram.message(CHAT_ID, card.message_id).plain_text


async def test_quorum_of_two_and_a_late_tap(rig: Rig) -> None:
    rig.kube.set_image("deployments", "shop", "checkout", "checkout:2")
    await rig.post_alert(
        am_payload("g-undo", alert(action="kubectl rollout undo deployment/checkout -n shop"))
    )
    card = await rig.wait_card()
    data = approve_data(card)
    assert "risk high" in card.plain_text and "Approvals 0/2" in card.plain_text
    alice, bob, carol = (
        rig.telegram.user(ALICE, "alice"),
        rig.telegram.user(BOB, "bob"),
        rig.telegram.user(CAROL, "carol"),
    )
    first = rig.telegram.tap(CHAT_ID, card.message_id, alice, data)
    assert (await rig.telegram.wait_answer(first)).text == APPROVE_RECEIVED
    await rig.wait_text(card.message_id, "Approvals 1/2: @alice")
    again = rig.telegram.tap(CHAT_ID, card.message_id, alice, data)
    assert (await rig.telegram.wait_answer(again)).text == ALREADY_SIGNED
    second = rig.telegram.tap(CHAT_ID, card.message_id, bob, data)
    assert (await rig.telegram.wait_answer(second)).text == APPROVE_RECEIVED
    reply = await rig.wait_reply(card.message_id)
    assert "rolled back to revision 1" in reply.plain_text
    deployment = rig.kube.get("deployments", "shop", "checkout")
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "checkout:1"
    # The keyboard is gone, so a late tap can only come from a stale client: it is refused.
    late = rig.telegram.tap_stale(CHAT_ID, card.message_id, carol, data)
    answer = await rig.telegram.wait_answer(late)
    assert answer.show_alert and "already approved" in (answer.text or "")


async def test_reject_closes_the_card(rig: Rig) -> None:
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    reject = encode(CardAction(False, approve_data(card).split(":")[2]))
    query = rig.telegram.tap(CHAT_ID, card.message_id, rig.telegram.user(BOB, "bob"), reject)
    answer = await rig.telegram.wait_answer(query)
    assert answer.text == REJECT_RECEIVED
    closed = await rig.wait_text(card.message_id, "Rejected by @bob")
    assert decision_buttons(closed) == []
    assert real_writes(rig) == []


async def test_an_approver_who_changes_their_mind_rejects(rig_factory: Rig) -> None:
    rig_factory.policy = policy({"medium": 2})
    await rig_factory.start()
    rig = rig_factory
    try:
        await rig.post_alert(am_payload())
        card = await rig.wait_card()
        bob = rig.telegram.user(BOB, "bob")
        data = approve_data(card)
        tap = rig.telegram.tap(CHAT_ID, card.message_id, bob, data)
        first = await rig.telegram.wait_answer(tap)
        assert first.text == APPROVE_RECEIVED
        await rig.wait_text(card.message_id, "Approvals 1/2")
        reject = encode(CardAction(False, data.split(":")[2]))
        query = rig.telegram.tap(CHAT_ID, card.message_id, bob, reject)
        answer = await rig.telegram.wait_answer(query)
        assert answer.text == REJECT_RECEIVED
        closed = await rig.wait_text(card.message_id, "Rejected by @bob")
        assert decision_buttons(closed) == []
        assert real_writes(rig) == []
    finally:
        await rig.stop()


async def test_twenty_concurrent_taps_by_three_approvers_execute_once(rig_factory: Rig) -> None:
    rig_factory.policy = policy({"medium": 2})
    await rig_factory.start()
    rig = rig_factory
    try:
        await rig.post_alert(am_payload())
        card = await rig.wait_card()
        data = approve_data(card)
        users = [
            rig.telegram.user(ALICE, "alice"),
            rig.telegram.user(BOB, "bob"),
            rig.telegram.user(CAROL, "carol"),
        ]
        queries = [
            rig.telegram.tap(CHAT_ID, card.message_id, users[i % 3], data) for i in range(20)
        ]
        answers = await asyncio.gather(*(rig.telegram.wait_answer(q) for q in queries))
        # All arrive before any vote is written: each is told it was received.
        assert {a.text for a in answers} <= {APPROVE_RECEIVED, ALREADY_SIGNED}
        await rig.wait_reply(card.message_id)
        await asyncio.sleep(0.5)
        assert len(real_writes(rig)) == 1
        replies = [m for m in rig.bot_messages() if m.reply_to_message_id == card.message_id]
        assert len(replies) == 1
    finally:
        await rig.stop()


async def test_card_shows_since_when_and_links_from_the_payload(rig: Rig) -> None:
    early, late = alert("a"), alert("b")
    early["startsAt"] = "2026-11-28T02:14:00Z"
    late["annotations"]["runbook_url"] = "https://runbooks.local/checkout?x=1&y=2"
    early["annotations"]["runbook_url"] = "javascript:alert(1)"
    await rig.post_alert(am_payload('{}:{alertname="CheckoutErrors"}', early, late))
    card = await rig.wait_card()
    assert "🔥 firing since 02:14 UTC" in card.plain_text
    # Telegram keeps "N minutes ago" and "in 1 hour" current itself: no edits as time passes.
    times = [ent for ent in card.entities if ent["type"] == "date_time"]
    assert [ent["date_time_format"] for ent in times] == ["r", "r"]
    assert times[0]["unix_time"] == int(datetime(2026, 11, 28, 2, 14, tzinfo=UTC).timestamp())
    assert times[1]["unix_time"] > times[0]["unix_time"]
    assert "⏳ buttons close at " in card.plain_text
    # Four users hold a role that may restart in shop: too many to name, so the roles.
    assert "👥 needs 1 approver with role admin or oncall" in card.plain_text
    units = card.plain_text.encode("utf-16-le")  # entity offsets count UTF-16 units
    links = {
        units[2 * ent["offset"] : 2 * (ent["offset"] + ent["length"])].decode("utf-16-le"): ent[
            "url"
        ]
        for ent in card.entities
        if ent["type"] == "text_link"
    }
    assert links == {
        "source": "http://prometheus.local/graph?g0.expr=x",
        "Alertmanager": "http://alertmanager.local",
        "runbook": "https://runbooks.local/checkout?x=1&y=2",
    }
