"""The card publisher as the app wires it, its sender on the Bot API stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from telegram.ext import Application

from opsgate.app import build_telegram
from opsgate.bot.sender import TelegramSender
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.services.card_quota import CardQuota
from opsgate.services.cards import CardPublisher
from opsgate.services.chats import ChatDirectory
from opsgate.services.storage.db import Database
from opsgate.settings import Settings

App = Application[Any, Any, Any, Any, Any, Any]


@asynccontextmanager
async def wired_publisher(
    db: Database, chat_id: int, *, quota: CardQuota | None = None
) -> AsyncIterator[tuple[CardPublisher, FakeTelegram]]:
    async with FakeTelegram() as telegram:
        telegram.add_chat(chat_id)
        settings = Settings(
            telegram_token=telegram.token,
            alert_chat_id=chat_id,
            telegram_api_url=telegram.root_url,
        )
        app: App = build_telegram(settings)
        async with app:
            sender = TelegramSender(app.bot, ChatDirectory(db))
            yield CardPublisher(db, sender, quota=quota), telegram
