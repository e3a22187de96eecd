"""Where a tap came from, read from the callback query as PTB decodes Telegram's JSON."""

from __future__ import annotations

from typing import Any

from telegram import Bot, CallbackQuery

from opsgate.bot.render import duplicate_card_html, message_link
from opsgate.handlers.callback_actions import offers_tapped_button, tapped_message
from opsgate.services.chat import MessageRef

CHAT = -1001234567890
BOT = Bot("123456:TEST-TOKEN")
KEYBOARD = {
    "inline_keyboard": [
        [
            {"text": "✅ Approve", "callback_data": "v1:ap:abc"},
            {"text": "❌ Reject", "callback_data": "v1:rj:abc"},
        ]
    ]
}


def query(data: str, message: dict[str, Any]) -> CallbackQuery:
    payload = {
        "id": "1",
        "from": {"id": 1001, "is_bot": False, "first_name": "alice"},
        "chat_instance": "1",
        "data": data,
        "message": message,
    }
    decoded = CallbackQuery.de_json(payload, BOT)
    assert decoded is not None
    return decoded


def message(**extra: Any) -> dict[str, Any]:
    return {
        "message_id": 7,
        "date": 1,
        "chat": {"id": CHAT, "type": "supergroup", "title": "On-call"},
        "text": "card",
        **extra,
    }


def test_a_tap_on_a_card_names_the_card_and_its_button() -> None:
    tap = query("v1:ap:abc", message(reply_markup=KEYBOARD, message_thread_id=3))
    assert tapped_message(tap) == MessageRef(CHAT, 7, 3)
    assert offers_tapped_button(tap)


def test_data_the_message_does_not_offer_is_not_its_button() -> None:
    assert not offers_tapped_button(query("v1:ap:other", message(reply_markup=KEYBOARD)))
    # The keyboard was edited away (a stale client) or never there.
    assert not offers_tapped_button(query("v1:ap:abc", message()))


def test_an_inaccessible_message_binds_to_nothing() -> None:
    # Telegram sends date 0 and no content for a message the bot can no longer see.
    tap = query("v1:ap:abc", {"message_id": 7, "date": 0, "chat": message()["chat"]})
    assert tapped_message(tap) is None
    assert not offers_tapped_button(tap)


def test_the_pointer_links_to_the_live_card_in_supergroups_only() -> None:
    live = MessageRef(CHAT, 42)
    assert message_link(live) == "https://t.me/c/1234567890/42"
    assert duplicate_card_html("INC-<1>", live) == (
        "↪️ Duplicate card for <code>INC-&lt;1&gt;</code>; the live card is here: "
        '<a href="https://t.me/c/1234567890/42">https://t.me/c/1234567890/42</a>'
    )
    assert message_link(MessageRef(-4242, 42)) is None
    assert duplicate_card_html("INC-1", MessageRef(-4242, 42)) == (
        "↪️ Duplicate card for <code>INC-1</code>; the live card is another message in this chat."
    )
