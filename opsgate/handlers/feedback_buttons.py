"""The "Wrong diagnosis" button under a result."""

from __future__ import annotations

import time
from dataclasses import dataclass

from telegram import Update
from telegram.ext import ContextTypes

from opsgate.bot.callback_data import FeedbackAction
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.callback_actions import expect, offers_tapped_button, tapped_message
from opsgate.services.learning import NOT_HERE, LearningService
from opsgate.services.policy_source import PolicySource

NOT_MEMBER = "Only people in the opsgate policy can judge a diagnosis."


@dataclass
class FeedbackButtons:
    learning: LearningService
    policy: PolicySource
    sender: TelegramSender

    async def on_tap(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        arrived = time.monotonic()
        query = update.callback_query
        if query is None:
            return
        action = await expect(self.sender, query, FeedbackAction, arrived=arrived)
        if action is None:
            return
        user = query.from_user
        if not self.policy.current().is_member(user.id):
            await self.sender.answer_callback(query.id, NOT_MEMBER, alert=True, arrived=arrived)
            return
        who = f"@{user.username}" if user.username else f"id {user.id}"
        answer = await self.learning.record_feedback(
            action.approval_id,
            who,
            origin=tapped_message(query),
            origin_offers_it=offers_tapped_button(query),
        )
        await self.sender.answer_callback(
            query.id, answer, alert=answer == NOT_HERE, arrived=arrived
        )
