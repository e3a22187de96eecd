"""Start-up checks against the Telegram stand-in: the alert chat must be usable, routed chats
are warned about, and /whoami tells a group its own id."""

from __future__ import annotations

import pytest
import structlog.testing

from opsgate.settings import SettingsError
from tests.builders import ALICE, policy
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_commands import ask

UNKNOWN = -1007777777777
TOPIC = 12


async def test_an_unknown_alert_chat_stops_start_up_with_one_line(rig_factory: Rig) -> None:
    rig_factory.overrides["alert_chat_id"] = UNKNOWN
    with pytest.raises(SettingsError) as raised:
        await rig_factory.start()
    assert str(raised.value) == (f"OPSGATE_ALERT_CHAT_ID={UNKNOWN}: getChat: Chat not found")


@pytest.mark.parametrize(
    ("kind", "chat", "reason"),
    [
        ("left", {"bot_status": "left"}, "the bot is not a member of the supergroup"),
        ("muted", {"members_can_post": False}, "members may not send messages"),
        ("channel", {"type": "channel"}, "the bot must be an administrator of the channel"),
    ],
)
async def test_an_alert_chat_the_bot_cannot_post_in_stops_start_up(
    rig_factory: Rig, kind: str, chat: dict[str, object], reason: str
) -> None:
    rig_factory.telegram.add_chat(UNKNOWN, title=kind, **chat)  # type: ignore[arg-type]
    rig_factory.overrides["alert_chat_id"] = UNKNOWN
    with pytest.raises(SettingsError, match=f"^OPSGATE_ALERT_CHAT_ID={UNKNOWN}: {reason}"):
        await rig_factory.start()


async def test_an_administrator_may_post_where_members_may_not(rig_factory: Rig) -> None:
    rig_factory.telegram.add_chat(UNKNOWN, members_can_post=False, bot_status="administrator")
    rig_factory.overrides["alert_chat_id"] = UNKNOWN
    await rig_factory.start()


async def test_an_unknown_routed_chat_is_a_warning_and_start_up_goes_on(
    rig_factory: Rig,
) -> None:
    rig_factory.policy = policy(routes=[{"match": {"namespace": "x"}, "chat_id": UNKNOWN}])
    with structlog.testing.capture_logs() as logs:
        await rig_factory.start()
    warnings = [e for e in logs if e["event"] == "routed_chat_unusable"]
    assert [(w["chat_id"], w["reason"]) for w in warnings] == [(UNKNOWN, "getChat: Chat not found")]
    (started,) = [e for e in logs if e["event"] == "opsgate_started"]
    assert started["bot"] == "@opsgate_bot" and started["database"] in ("sqlite", "postgresql")
    assert started["updates"] == "polling"
    assert started["listen"] == f"http://127.0.0.1:{rig_factory.runtime.port}"  # type: ignore[union-attr]


async def test_whoami_in_a_group_and_in_a_topic_names_the_chat(rig: Rig) -> None:
    answer = (await ask(rig, CHAT_ID, ALICE, "alice", "/whoami")).plain_text
    assert f"This chat's id: {CHAT_ID}" in answer
    assert f"OPSGATE_ALERT_CHAT_ID={CHAT_ID}" in answer and "topic" not in answer
    rig.telegram.add_topic(CHAT_ID, TOPIC, name="alerts")
    asked = rig.telegram.send_text(
        CHAT_ID, rig.telegram.user(ALICE, "alice"), "/whoami", message_thread_id=TOPIC
    )
    in_topic = (await rig.wait_reply(asked.message_id)).plain_text
    assert f"OPSGATE_ALERT_THREAD_ID={TOPIC}" in in_topic
    rig.telegram.add_chat(ALICE, type="private", title="Alice")
    private = (await ask(rig, ALICE, ALICE, "alice", "/whoami")).plain_text
    assert "OPSGATE_ALERT_CHAT_ID" not in private
