"""Approve / Reject taps on alert cards."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Update
from telegram.ext import ContextTypes

from opsgate.bot.callback_data import CardAction
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.callback_actions import expect
from opsgate.services.approvals import ApprovalService, Tapper


@dataclass
class CardButtons:
    approvals: ApprovalService
    sender: TelegramSender

    async def on_tap(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        action = await expect(self.sender, query, CardAction)
        if action is None:
            return
        user = query.from_user
        outcome = await self.approvals.decide(
            action.approval_id, Tapper(user.id, user.username or ""), action.approve
        )
        await self.sender.answer_callback(query.id, outcome.text, alert=outcome.alert)
