"""Chat commands through the Telegram stand-in, in private chats and in the group."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import insert

from opsgate.sandbox.telegram_api import FakeMessage
from opsgate.services.approvals import APPROVE_RECEIVED
from opsgate.services.policy import Policy, PolicyDocument
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Incident, TimelineEvent
from tests.builders import ALICE, BOB, MALLORY, VIEWER, alert, am_payload, policy_document
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data

BUSY = "INC-BUSY0001"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
EVENT = re.compile(r"event (\d{4})")


async def ask(rig: Rig, chat_id: int, user_id: int, name: str, text: str) -> FakeMessage:
    asked = rig.telegram.send_text(chat_id, rig.telegram.user(user_id, name), text)
    return await rig.wait_reply(asked.message_id, chat_id=chat_id)


async def test_commands_are_registered(rig: Rig) -> None:
    registered = [c["command"] for c in rig.telegram.commands[("default", "")]]
    assert registered == [
        "incidents",
        "timeline",
        "card",
        "pending",
        "audit",
        "kb",
        "evidence",
        "playbooks",
        "status",
        "whoami",
        "help",
    ]


async def test_whoami_and_help_depend_on_the_policy(rig: Rig) -> None:
    rig.telegram.add_chat(MALLORY, type="private", title="Mallory")
    who = await ask(rig, MALLORY, MALLORY, "mallory", "/whoami")
    assert f"Telegram id: {MALLORY}" in who.plain_text and "not in the policy" in who.plain_text
    line = who.plain_text.split("Policy entry (under users:): ", 1)[1].splitlines()[0]
    document = policy_document()
    document["users"] += yaml.safe_load(line)
    assert Policy(PolicyDocument.model_validate(document)).roles_of(MALLORY) == ["viewer"]
    stranger = (await ask(rig, MALLORY, MALLORY, "mallory", "/start")).plain_text
    assert "/whoami" in stranger and "/incidents" not in stranger

    rig.telegram.add_chat(VIEWER, type="private", title="Vic")
    viewer = (await ask(rig, VIEWER, VIEWER, "vic", "/help")).plain_text
    assert "/incidents" in viewer and "/pending" not in viewer
    approver = (await ask(rig, CHAT_ID, ALICE, "alice", "/help@opsgate_bot")).plain_text
    assert "/pending" in approver and "Approve / Reject" in approver
    roles = (await ask(rig, CHAT_ID, ALICE, "alice", "/whoami")).plain_text
    assert "roles: oncall" in roles


async def test_queries_need_a_policy_role(rig: Rig) -> None:
    rig.telegram.add_chat(MALLORY, type="private", title="Mallory")
    for command in ("/incidents", "/timeline INC-AAAA0000", "/audit", "/status", "/pending"):
        answer = await ask(rig, MALLORY, MALLORY, "mallory", command)
        assert "not in the opsgate policy" in answer.plain_text
    pending = await ask(rig, CHAT_ID, VIEWER, "vic", "/pending")
    assert "Only approvers" in pending.plain_text


async def test_incidents_are_paged_in_place(rig: Rig) -> None:
    for i in range(10):
        await rig.post_alert(am_payload(f"g{i}", alert(f"fp{i}", alertname=f"Alert{i:02d}")))
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 10)
    first = await ask(rig, CHAT_ID, VIEWER, "vic", "/incidents")
    assert "Open incidents 1-8 of 10" in first.plain_text
    assert "Alert09" in first.plain_text and "Alert01" not in first.plain_text
    assert "pending 0/1" in first.plain_text
    assert [text for text, _ in first.buttons] == ["Next ▶"]
    before = len(rig.bot_messages())

    query = rig.telegram.tap(
        CHAT_ID, first.message_id, rig.telegram.user(VIEWER, "vic"), first.buttons[0][1] or ""
    )
    await rig.telegram.wait_answer(query)
    second = await rig.wait_text(first.message_id, "Open incidents 9-10 of 10")
    assert "Alert00" in second.plain_text and "Alert09" not in second.plain_text
    assert [text for text, _ in second.buttons] == ["◀ Prev"]
    assert len(rig.bot_messages()) == before  # edited, nothing new posted

    stranger = rig.telegram.tap(
        CHAT_ID, first.message_id, rig.telegram.user(MALLORY, "m"), second.buttons[0][1] or ""
    )
    answer = await rig.telegram.wait_answer(stranger)
    assert answer.show_alert and "not in the opsgate policy" in (answer.text or "")

    # Paging data copied onto an alert card changes nothing there: the card keeps its buttons.
    card = rig.cards()[0]
    forged = rig.telegram.tap_forged(
        CHAT_ID, card.message_id, rig.telegram.user(VIEWER, "vic"), first.buttons[0][1] or ""
    )
    answer = await rig.telegram.wait_answer(forged)
    assert answer.show_alert and "does not belong here" in (answer.text or "")
    assert rig.telegram.message(CHAT_ID, card.message_id).buttons == card.buttons


async def test_no_open_incidents(rig: Rig) -> None:
    answer = await ask(rig, CHAT_ID, VIEWER, "vic", "/incidents")
    assert "No open incidents" in answer.plain_text and answer.buttons == []


async def test_pending_audit_and_status(rig: Rig) -> None:
    created = (await rig.post_alert(am_payload())).json()
    card = await rig.wait_card()
    pending = await ask(rig, CHAT_ID, BOB, "bob", "/pending")
    assert created["incident_id"] in pending.plain_text
    assert "signed 0/1" in pending.plain_text and "kubectl rollout restart" in pending.plain_text

    tap = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    await rig.telegram.wait_answer(tap)
    await rig.wait_reply(card.message_id)
    audit = await ask(rig, CHAT_ID, VIEWER, "vic", f"/audit {created['incident_id']}")
    text = audit.plain_text
    assert "kubectl rollout restart deployment/checkout -n shop" in text
    assert "succeeded" in text and "approved by @alice" in text and "1 attempt(s)" in text
    await rig.wait_text(card.message_id, "verified")
    verified = await ask(rig, CHAT_ID, VIEWER, "vic", f"/audit {created['incident_id']}")
    assert "verification success: rollout complete" in verified.plain_text
    latest = await ask(rig, CHAT_ID, VIEWER, "vic", "/audit")
    assert created["incident_id"] in latest.plain_text
    assert "Usage" in (await ask(rig, CHAT_ID, VIEWER, "vic", "/audit nonsense")).plain_text
    assert (
        "No incident INC-ZZZZ0000"
        in (await ask(rig, CHAT_ID, VIEWER, "vic", "/audit INC-ZZZZ0000")).plain_text
    )
    empty = await ask(rig, CHAT_ID, BOB, "bob", "/pending")
    assert "Nothing is waiting" in empty.plain_text

    status = (await ask(rig, CHAT_ID, VIEWER, "vic", "/status")).plain_text
    assert "opsgate 0.1.0" in status
    assert "database: ok (" in status
    assert "Kubernetes API: reachable (v1.31.0-fake)" in status
    assert "last alert received: 20" in status
    assert "inactive chats: none" in status


async def test_status_reports_an_unreachable_cluster(rig: Rig) -> None:
    rig.kube.inject("GET", r"^/version/?$", 503, count=5)
    status = (await ask(rig, CHAT_ID, VIEWER, "vic", "/status")).plain_text
    assert "Kubernetes API: unreachable (503" in status


async def test_unknown_commands(rig: Rig) -> None:
    rig.telegram.add_chat(ALICE, type="private", title="Alice")
    private = await ask(rig, ALICE, ALICE, "alice", "/frobnicate")
    assert "Unknown command /frobnicate" in private.plain_text
    addressed = await ask(rig, CHAT_ID, ALICE, "alice", "/frobnicate@opsgate_bot")
    assert "Unknown command" in addressed.plain_text
    other = rig.telegram.send_text(CHAT_ID, rig.telegram.user(ALICE, "alice"), "/frobnicate")
    marker = rig.telegram.send_text(CHAT_ID, rig.telegram.user(ALICE, "alice"), "/whoami")
    await rig.wait_reply(marker.message_id)
    replies = [m for m in rig.bot_messages() if m.reply_to_message_id == other.message_id]
    assert replies == []


async def test_long_answers_are_split_under_the_limit(rig: Rig) -> None:
    for i in range(40):
        await rig.post_alert(
            am_payload(f"long{i}", alert(f"fp{i}", alertname=f"VeryLongAlertName{'X' * 60}{i}"))
        )
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 40, 20)
    asked = rig.telegram.send_text(CHAT_ID, rig.telegram.user(BOB, "bob"), "/pending")
    await rig.telegram.wait_for(
        lambda: (
            sum(1 for m in rig.bot_messages() if m.reply_to_message_id == asked.message_id) >= 2
        ),
        10,
    )
    parts = [m for m in rig.bot_messages() if m.reply_to_message_id == asked.message_id]
    assert all(len(m.plain_text) <= 4096 for m in parts)
    assert "(continued)" in parts[1].plain_text


@pytest.mark.parametrize("where", ["private", "group"])
async def test_every_command_answers_in_private_and_in_the_group(rig: Rig, where: str) -> None:
    created = (await rig.post_alert(am_payload())).json()
    await rig.wait_card()
    chat = BOB if where == "private" else CHAT_ID
    if where == "private":
        rig.telegram.add_chat(BOB, type="private", title="Bob")
    suffix = "" if where == "private" else "@opsgate_bot"
    expected = {
        "/start": "Your commands",
        "/help": "Your commands",
        "/whoami": f"Telegram id: {BOB}",
        "/incidents": "Open incidents 1-1 of 1",
        f"/timeline {created['incident_id']}": "alert_received",
        "/pending": "Pending approvals",
        "/audit": "Nothing has run",
        "/status": "database: ok",
    }
    for command, needle in expected.items():
        name, _, rest = command.partition(" ")
        text = f"{name}{suffix} {rest}".strip()
        answer = await ask(rig, chat, BOB, "bob", text)
        assert needle in answer.plain_text, (text, answer.plain_text)


async def store(rig: Rig, *batches: tuple[type[Any], list[dict[str, Any]]]) -> None:
    """Rows written straight to the database, in bulk, beside a quiet resolved incident."""
    incident = {
        "id": BUSY,
        "group_key": "bulk",
        "source": "test",
        "status": "resolved",
        "chat_id": CHAT_ID,
        "created_at": T0,
        "updated_at": T0,
        "resolved_at": T0,
    }
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            for model, rows in ((Incident, [incident]), *batches):
                await session.execute(insert(model), rows)
    finally:
        await db.dispose()


async def tap_and_wait_edit(rig: Rig, message: FakeMessage, label: str) -> FakeMessage:
    edits = message.edit_count
    data = dict(message.buttons)[label] or ""
    query = rig.telegram.tap(CHAT_ID, message.message_id, rig.telegram.user(VIEWER, "vic"), data)
    assert (await rig.telegram.wait_answer(query)).text in (None, "")
    await rig.telegram.wait_for(lambda: message.edit_count > edits)
    return message


def shown_events(message: FakeMessage) -> list[int]:
    return [int(n) for n in EVENT.findall(message.plain_text)]


async def test_a_timeline_of_thousands_pages_in_place(rig: Rig) -> None:
    events = [
        {
            "incident_id": BUSY,
            "at": T0 + timedelta(seconds=i // 2),  # pairs share a time: the id breaks the tie
            "kind": "alerts_updated",
            "status": "info",
            "actor": "alertmanager",
            "summary": f"event {i:04d}",
        }
        for i in range(5000)
    ]
    events[-1]["summary"] = "event 4999 " + "<b>&amp; 😀 " * 2000
    await store(rig, (TimelineEvent, events))
    before = len(rig.bot_messages())

    first = await ask(rig, CHAT_ID, VIEWER, "vic", f"/timeline {BUSY}")
    assert len(rig.bot_messages()) == before + 1
    assert f"Timeline {BUSY} · events 1-30 of 5,000, newest first" in first.plain_text
    assert shown_events(first) == list(range(4999, 4969, -1))
    assert "…" in first.plain_text and len(first.plain_text) < 4096
    assert [text for text, _ in first.buttons] == ["⬅️ Older"]

    second = await tap_and_wait_edit(rig, first, "⬅️ Older")
    assert "events 31-60 of 5,000" in second.plain_text
    assert shown_events(second) == list(range(4969, 4939, -1))
    assert [text for text, _ in second.buttons] == ["⬅️ Older", "Newer ➡️"]
    back = await tap_and_wait_edit(rig, second, "Newer ➡️")
    assert "events 1-30 of 5,000" in back.plain_text
    assert shown_events(back)[1:] == list(range(4998, 4969, -1))

    # Down to the oldest: every event shows up exactly once, in order, and nothing new is sent.
    seen = shown_events(back)
    page = back
    while "⬅️ Older" in dict(page.buttons):
        page = await tap_and_wait_edit(rig, page, "⬅️ Older")
        seen += shown_events(page)
    assert seen == list(range(4999, -1, -1))
    assert "events 4,981-5,000 of 5,000" in page.plain_text
    assert [text for text, _ in page.buttons] == ["Newer ➡️"]
    assert len(rig.bot_messages()) == before + 1


async def test_an_answer_that_would_be_long_is_three_messages_at_most(rig: Rig) -> None:
    approvals = [
        {
            "id": f"bulk{i:04d}",
            "incident_id": BUSY,
            "action": f"kubectl rollout restart deployment/checkout-{i} -n shop",
            "operation": {},
            "risk": "medium",
            "requested_by": "opsgate",
            "status": "approved",
            "required_approvals": 1,
            "created_at": T0,
            "expires_at": T0,
        }
        for i in range(200)
    ]
    executions = [
        {
            "approval_id": a["id"],
            "status": "failed",
            "attempts": 3,
            "max_attempts": 3,
            "retry_delay_seconds": 1.0,
            "result_detail": "403: " + "forbidden " * 100,
            "created_at": T0 + timedelta(seconds=i),
        }
        for i, a in enumerate(approvals)
    ]
    await store(rig, (Approval, approvals), (Execution, executions))
    asked = rig.telegram.send_text(CHAT_ID, rig.telegram.user(VIEWER, "vic"), f"/audit {BUSY}")

    def answers() -> list[FakeMessage]:
        return [m for m in rig.bot_messages() if m.reply_to_message_id == asked.message_id]

    await rig.telegram.wait_for(
        lambda: "more not shown" in answers()[-1].plain_text if answers() else False
    )
    parts = answers()
    assert len(parts) == 3
    assert all(len(m.plain_text) <= 4096 for m in parts)
    left = re.search(
        r"… (\d+) more not shown; /timeline INC-BUSY0001 has every step", parts[-1].plain_text
    )
    assert left is not None
    shown = sum(m.plain_text.count("checkout-") for m in parts)
    assert shown + int(left.group(1)) == 200


async def test_a_tap_is_answered_while_a_command_answer_is_still_on_its_way(rig: Rig) -> None:
    # However long a command's answer takes to reach the chat (a budget spent, Telegram slow),
    # a tap sent meanwhile is answered at once: Telegram gives its spinner only seconds.
    response = await rig.post_alert(am_payload())
    incident_id = response.json()["incident_id"]
    card = await rig.wait_card()
    held = rig.telegram.hold("sendMessage", chat_id=CHAT_ID)
    rig.telegram.send_text(CHAT_ID, rig.telegram.user(VIEWER, "vic"), f"/timeline {incident_id}")
    await held.wait_arrived()
    query = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    assert (await rig.telegram.wait_answer(query)).text == APPROVE_RECEIVED
    assert not held.released
    held.release()
    await rig.telegram.wait_for(
        lambda: any(f"Timeline {incident_id}" in m.plain_text for m in rig.bot_messages())
    )
