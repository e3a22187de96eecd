"""A send Telegram carried out but answered too late is reported as of unknown outcome.

opsgate's own Telegram wiring (build_telegram: PTB, the configured timeouts, the sender's scheduler)
against the fake Bot API, which carries the call out at once and answers after the client has
given up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application

from opsgate.app import build_telegram
from opsgate.bot.sender import TelegramSender
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.services.chat import (
    ChatOutcomeUnknown,
    ChatTarget,
    ChatUnavailable,
)
from opsgate.services.chats import ChatDirectory
from opsgate.services.storage.db import Database
from opsgate.services.storage.schema_upgrade import upgrade_schema
from opsgate.settings import Settings
from tests.builders import decision_buttons, pending_card

CHAT_ID = -1001234567890
# Long enough for a prompt answer on a busy machine, far below the fake's answer delay.
READ_TIMEOUT = 3.0
ANSWER_DELAY = 300.0
CARD = pending_card("INC-LOST")

App = Application[Any, Any, Any, Any, Any, Any]


def settings(api_url: str) -> Settings:
    return Settings(
        telegram_token=FakeTelegram().token,  # type: ignore[arg-type]
        alert_chat_id=CHAT_ID,
        telegram_api_url=api_url,
        telegram_read_timeout=READ_TIMEOUT,
        telegram_connect_timeout=5,
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}")
    await upgrade_schema(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        fake.add_chat(CHAT_ID)
        yield fake


@pytest.fixture
async def sender(telegram: FakeTelegram, db: Database) -> AsyncIterator[TelegramSender]:
    app: App = build_telegram(settings(telegram.root_url))
    async with app:
        yield TelegramSender(app.bot, ChatDirectory(db))


async def test_a_card_answered_too_late_is_posted_with_an_unknown_outcome(
    telegram: FakeTelegram, sender: TelegramSender
) -> None:
    telegram.delay_answer("sendMessage", ANSWER_DELAY)
    with pytest.raises(ChatOutcomeUnknown, match="sendMessage"):
        await sender.post_card(ChatTarget(CHAT_ID), CARD)
    [card] = telegram.messages(CHAT_ID)
    assert "INC-LOST" in card.plain_text
    assert [text for text, _ in decision_buttons(card)] == ["✅ Approve", "❌ Reject"]

    # The answer was lost, not the connection: the next send goes through.
    ref = await sender.post_card(ChatTarget(CHAT_ID), CARD)
    assert ref.message_id == card.message_id + 1


async def test_an_edit_answered_too_late_is_applied_with_an_unknown_outcome(
    telegram: FakeTelegram, sender: TelegramSender
) -> None:
    ref = await sender.post_card(ChatTarget(CHAT_ID), CARD)
    telegram.delay_answer("editMessageText", ANSWER_DELAY)
    with pytest.raises(ChatOutcomeUnknown, match="editMessageText"):
        await sender.edit_html(ref.chat_id, ref.message_id, "<b>closed</b>")
    edited = telegram.message(CHAT_ID, ref.message_id)
    assert (edited.plain_text, edited.buttons) == ("closed", [])


async def test_a_server_that_cannot_be_reached_was_not_sent_to(db: Database) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused before a byte is sent.
    app: App = build_telegram(settings(f"http://127.0.0.1:{port}"))
    sender = TelegramSender(app.bot, ChatDirectory(db))
    try:
        with pytest.raises(ChatUnavailable) as failed:
            await sender.post_card(ChatTarget(CHAT_ID), CARD)
    finally:
        await app.bot.shutdown()
    assert not isinstance(failed.value, ChatOutcomeUnknown)


async def test_a_refused_send_is_not_unknown(
    telegram: FakeTelegram, sender: TelegramSender
) -> None:
    telegram.inject_error("sendMessage", status=500)
    with pytest.raises(ChatUnavailable) as failed:
        await sender.post_card(ChatTarget(CHAT_ID), CARD)
    assert not isinstance(failed.value, ChatOutcomeUnknown)
    assert telegram.messages(CHAT_ID) == []


async def test_a_tap_is_answered_while_a_send_waits_for_a_slow_bot_api(
    telegram: FakeTelegram, sender: TelegramSender
) -> None:
    card = await sender.post_card(ChatTarget(CHAT_ID), CARD)
    telegram.delay_answer("sendMessage", ANSWER_DELAY)
    sending = asyncio.create_task(sender.post_card(ChatTarget(CHAT_ID), CARD))
    while not any(call.method == "sendMessage" for call in telegram.calls[1:]):
        await asyncio.sleep(0.01)
    query_id = telegram.tap(CHAT_ID, card.message_id, telegram.user(7, "alice"), "v1:ap:ap1")
    # The send holds its connection until it gives up; the answer takes another one.
    await sender.answer_callback(query_id, "ok", alert=False)
    assert not sending.done()
    [answer] = [call for call in telegram.calls if call.method == "answerCallbackQuery"]
    assert answer.status == 200
    with pytest.raises(ChatOutcomeUnknown):
        await sending
