"""Routing by labels, result fan-out to chats and notifiers, and chat lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from opsgate.services.policy import PolicyError
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Chat, Incident
from tests.builders import ALICE, CAROL, VIEWER, alert, am_payload, policy
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data
from tests.fakes.webhook_receiver import WebhookReceiver

PAYMENTS_CHAT, PAYMENTS_TOPIC = -100200, 5
SUBSCRIBER, GONE, OLD_GROUP, NEW_SUPERGROUP = -100300, -100400, -500, -100500


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    fake = WebhookReceiver(slow_seconds=5)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def routed_policy(receiver: WebhookReceiver, **overrides: Any) -> dict[str, Any]:
    return {
        "routes": [
            {
                "name": "payments",
                "match": {"namespace": "payments"},
                "chat_id": PAYMENTS_CHAT,
                "thread_id": PAYMENTS_TOPIC,
                "subscribers": [SUBSCRIBER, GONE],
                "notifiers": ["slack", "discord", "audit", "broken", "slow"],
            },
            {"name": "shop", "match_re": {"service": "check.*"}, "subscribers": [SUBSCRIBER]},
        ],
        "notifiers": {
            "slack": {"type": "slack", "url": receiver.url("ok", "slack")},
            "discord": {"type": "discord", "url": receiver.url("ok", "discord")},
            "audit": {
                "type": "webhook",
                "url": receiver.url("ok", "audit"),
                "headers": {"X-Token": "t0ken"},
            },
            "broken": {"type": "webhook", "url": receiver.url("fail", "broken")},
            "slow": {"type": "webhook", "url": receiver.url("slow", "slow")},
        },
        **overrides,
    }


async def _approve_and_reply(
    rig: Rig, chat_id: int, payload: dict[str, Any], approver: int = ALICE
) -> int:
    await rig.post_alert(payload)
    card = await rig.wait_card(chat_id)
    tap = rig.telegram.tap(
        chat_id, card.message_id, rig.telegram.user(approver, f"u{approver}"), approve_data(card)
    )
    await rig.telegram.wait_answer(tap)
    await rig.wait_reply(card.message_id, chat_id=chat_id)
    return card.message_id


async def test_routes_subscribers_and_notifiers(
    rig_factory: Rig, receiver: WebhookReceiver
) -> None:
    rig = rig_factory
    rig.policy = policy(**routed_policy(receiver))
    rig.overrides["notifier_timeout_seconds"] = 0.3
    rig.kube.add_deployment("payments", "api", replicas=1)
    for chat in (PAYMENTS_CHAT, SUBSCRIBER, GONE):
        rig.telegram.add_chat(chat, type="supergroup", is_forum=chat == PAYMENTS_CHAT)
    rig.telegram.add_topic(PAYMENTS_CHAT, PAYMENTS_TOPIC)
    rig.telegram.block_chat(GONE)
    await rig.start()

    payload = am_payload(
        "g-pay",
        alert(
            namespace="payments",
            action="kubectl rollout restart deployment/api -n payments",
            extra_labels={"service": "api"},
        ),
    )
    await _approve_and_reply(rig, PAYMENTS_CHAT, payload, approver=CAROL)
    card = rig.cards(PAYMENTS_CHAT)[0]
    assert card.message_thread_id == PAYMENTS_TOPIC
    assert rig.cards(CHAT_ID) == []

    await rig.telegram.wait_for(lambda: bool(rig.bot_messages(SUBSCRIBER)))
    compact = rig.bot_messages(SUBSCRIBER)[0].plain_text
    assert "Succeeded" in compact and "CheckoutErrors · api · payments" in compact

    # Each receiver has its own job: wait for every one of them.
    for name in ("audit", "slack", "discord"):
        await rig.eventually(lambda n=name: len(receiver.bodies("ok", n)) == 1, 10)
    slack = receiver.bodies("ok", "slack")[0]
    assert "✅ Succeeded" in slack["text"] and "deployment/api" in slack["text"]
    discord = receiver.bodies("ok", "discord")[0]
    assert discord["allowed_mentions"] == {"parse": []} and "Succeeded" in discord["content"]
    audit = receiver.bodies("ok", "audit")[0]
    assert audit["succeeded"] is True and audit["approved_by"] == [f"@u{CAROL}"]
    assert audit["action"] == "kubectl rollout restart deployment/api -n payments"
    assert [r.headers["X-Token"] for r in receiver.received if r.path == "/ok/audit"] == ["t0ken"]

    # The broken receiver is retried in-process (3 tries), then by the job, and counted.
    await rig.eventually(lambda: len(receiver.bodies("fail", "broken")) >= 6, 15)
    # The slow one times out three times in-process; the job's second run proves the first
    # was counted as a failure.
    await rig.eventually(lambda: len(receiver.bodies("slow", "slow")) >= 4, 15)
    metrics = (await rig.client.get("/metrics")).text
    assert 'opsgate_notify_failures_total{destination="notifier:broken"}' in metrics
    assert 'opsgate_notify_failures_total{destination="notifier:slow"}' in metrics

    # The chat that removed the bot is marked inactive once and not tried again.
    await rig.eventually(lambda: _sends_to(rig, GONE) == 1, 10)
    status = rig.telegram.send_text(CHAT_ID, rig.telegram.user(VIEWER, "vic"), "/status")
    text = (await rig.wait_reply(status.message_id)).plain_text
    assert f"{GONE}: sendMessage: Forbidden" in text
    assert _sends_to(rig, GONE) == 1

    incident_id = await _incident_of(rig, card.message_id)
    expected = (
        f"result sent to tg:{SUBSCRIBER}",
        "result sent to notifier:slack",
        f"result not delivered to tg:{GONE}",
    )
    # Each delivery records its timeline event just after it happens: ask until all are in.
    for _ in range(40):
        timeline = rig.telegram.send_text(
            PAYMENTS_CHAT,
            rig.telegram.user(VIEWER, "vic"),
            f"/timeline {incident_id}",
            message_thread_id=PAYMENTS_TOPIC,
        )
        events = (await rig.wait_reply(timeline.message_id, chat_id=PAYMENTS_CHAT)).plain_text
        if all(e in events for e in expected):
            break
        await asyncio.sleep(0.1)
    for event in expected:
        assert event in events


async def test_alerts_matching_no_route_go_to_the_default_chat(
    rig_factory: Rig, receiver: WebhookReceiver
) -> None:
    rig = rig_factory
    rig.policy = policy(**routed_policy(receiver))
    rig.telegram.add_chat(SUBSCRIBER, type="supergroup")
    await rig.start()
    await _approve_and_reply(rig, CHAT_ID, am_payload())  # service=checkout matches "shop"
    await rig.telegram.wait_for(lambda: bool(rig.bot_messages(SUBSCRIBER)))
    assert receiver.received == []


async def test_group_migration_moves_the_card_and_later_sends(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.telegram.add_chat(OLD_GROUP, type="group")
    rig.telegram.add_chat(NEW_SUPERGROUP, type="supergroup")
    rig.overrides["alert_chat_id"] = OLD_GROUP
    await rig.start()
    rig.telegram.inject_error("sendMessage", migrate_to_chat_id=NEW_SUPERGROUP)
    card_id = await _approve_and_reply(rig, NEW_SUPERGROUP, am_payload())
    assert rig.telegram.messages(OLD_GROUP) == []
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            incident = await session.scalar(select(Incident))
            chat = await session.get(Chat, OLD_GROUP)
    finally:
        await db.dispose()
    assert incident is not None and incident.chat_id == NEW_SUPERGROUP
    assert incident.message_id == card_id
    assert chat is not None and chat.migrated_to == NEW_SUPERGROUP
    # A second alert goes to the new id at once, without another failed send.
    await rig.post_alert(am_payload("g-two", alert("other")))
    await rig.telegram.wait_for(lambda: len(rig.cards(NEW_SUPERGROUP)) == 2)
    failed = [c for c in rig.telegram.calls if c.method == "sendMessage" and c.status != 200]
    assert len(failed) == 1


def _sends_to(rig: Rig, chat_id: int) -> int:
    return sum(
        1
        for c in rig.telegram.calls
        if c.method == "sendMessage" and int(c.params.get("chat_id", 0)) == chat_id
    )


async def _incident_of(rig: Rig, message_id: int) -> str:
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            found = await session.scalar(
                select(Incident.id).where(Incident.message_id == message_id)
            )
    finally:
        await db.dispose()
    assert found is not None
    return found


async def test_notifier_config_errors_are_named() -> None:
    with pytest.raises(PolicyError, match=r"routes\.0\.notifiers\.0: undefined notifier 'ghost'"):
        policy(routes=[{"notifiers": ["ghost"]}])
    with pytest.raises(ValueError, match="url"):
        policy(notifiers={"x": {"type": "slack", "url": "ftp://x"}})
    assert httpx  # the receiver tests above talk plain HTTP through httpx
