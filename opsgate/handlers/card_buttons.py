"""Approve / Reject taps on alert cards."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from telegram import Update
from telegram.ext import ContextTypes

from opsgate.bot.callback_data import CardAction
from opsgate.bot.polled_updates import UpdateReceipts
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.answers_first import AnswersFirst
from opsgate.handlers.callback_actions import expect, offers_tapped_button, tapped_message
from opsgate.metrics import Metrics
from opsgate.services.approvals import ApprovalService, DuplicateCard, Tapper
from opsgate.services.chat import ChatError

log = structlog.get_logger(__name__)


@dataclass
class CardButtons:
    """Answers a tap on the incident's card first, from what the policy and the approval's
    fixed terms settle, then decides it; the card shows what the vote did. A tap from any
    other message is decided first: only the decision knows what it did to that message.

    The handler returns once the vote is durable: a polled tap is confirmed to Telegram only
    then (``receipts``), a webhook one's inbox job is done only then, so a crash in between
    has the tap sent again."""

    approvals: ApprovalService
    sender: TelegramSender
    metrics: Metrics = field(default_factory=Metrics)
    receipts: UpdateReceipts = field(default_factory=UpdateReceipts)
    order: AnswersFirst = field(default_factory=AnswersFirst)

    async def on_tap(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            await self._on_tap(update)
        finally:
            self.receipts.release(update.update_id)

    async def _on_tap(self, update: Update) -> None:
        # Telegram does not say when the tap happened; its arrival here is the nearest point.
        arrived = time.monotonic()
        query = update.callback_query
        if query is None:
            return
        origin = tapped_message(query)
        async with self.order.answering():
            action = await expect(self.sender, query, CardAction, arrived=arrived)
            if action is None:
                return
            user = query.from_user
            tapper = Tapper(user.id, user.username or "")
            answer = await self.approvals.foreseen_answer(
                action.approval_id, tapper, action.approve, origin
            )
            if answer is not None:
                await self._answer(query.id, answer.text, alert=answer.alert, arrived=arrived)
        if answer is not None:
            await self.order.quiet()
        outcome = await self.approvals.decide(
            action.approval_id,
            tapper,
            action.approve,
            origin=origin,
            origin_offers_it=offers_tapped_button(query),
        )
        with structlog.contextvars.bound_contextvars(incident_id=outcome.incident_id):
            if answer is None:
                await self._answer(query.id, outcome.text, alert=outcome.alert, arrived=arrived)
            if outcome.duplicate is not None:
                await self._point_to_live_card(outcome.duplicate)

    async def _answer(self, query_id: str, text: str, *, alert: bool, arrived: float) -> None:
        await self.sender.answer_callback(query_id, text, alert=alert, arrived=arrived)
        self.metrics.tap_answered(time.monotonic() - arrived)

    async def _point_to_live_card(self, duplicate: DuplicateCard) -> None:
        message = duplicate.message
        try:
            await self.sender.mark_duplicate(message, duplicate.incident_id, duplicate.live)
        except ChatError as exc:
            # The tap changed nothing either way; the duplicate just keeps its dead buttons.
            log.warning(
                "duplicate_card_edit_failed",
                incident_id=duplicate.incident_id,
                message_id=message.message_id,
                error=str(exc),
            )
