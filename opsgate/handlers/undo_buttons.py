"""The "Undo" button under a result."""

from __future__ import annotations

import time
from dataclasses import dataclass

from telegram import Update
from telegram.ext import ContextTypes

from opsgate.bot.callback_data import UndoAction
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.callback_actions import expect, offers_tapped_button, tapped_message
from opsgate.services.approvals import Tapper
from opsgate.services.undo import UndoService


@dataclass
class UndoButtons:
    undo: UndoService
    sender: TelegramSender

    async def on_tap(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        arrived = time.monotonic()
        query = update.callback_query
        if query is None:
            return
        action = await expect(self.sender, query, UndoAction, arrived=arrived)
        if action is None:
            return
        outcome = await self.undo.propose(
            action.approval_id,
            Tapper(query.from_user.id, query.from_user.username or ""),
            origin=tapped_message(query),
            origin_offers_it=offers_tapped_button(query),
        )
        await self.sender.answer_callback(
            query.id, outcome.text, alert=outcome.alert, arrived=arrived
        )
