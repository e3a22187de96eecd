"""Approve / Reject taps on alert cards."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from telegram import Update
from telegram.ext import ContextTypes

from opsgate.bot.callback_data import CardAction
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.callback_actions import expect, offers_tapped_button, tapped_message
from opsgate.metrics import Metrics
from opsgate.services.approvals import ApprovalService, DuplicateCard, Tapper
from opsgate.services.chat import ChatError

log = structlog.get_logger(__name__)


@dataclass
class CardButtons:
    approvals: ApprovalService
    sender: TelegramSender
    metrics: Metrics = field(default_factory=Metrics)

    async def on_tap(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        # Telegram does not say when the tap happened; its arrival here is the nearest point.
        arrived = time.monotonic()
        query = update.callback_query
        if query is None:
            return
        action = await expect(self.sender, query, CardAction, arrived=arrived)
        if action is None:
            return
        user = query.from_user
        tapper = Tapper(user.id, user.username or "")
        refusal = await self.approvals.foreseen_refusal(action.approval_id, tapper)
        if refusal is not None:
            await self._answer(query.id, refusal, alert=True, arrived=arrived)
        outcome = await self.approvals.decide(
            action.approval_id,
            tapper,
            action.approve,
            origin=tapped_message(query),
            origin_offers_it=offers_tapped_button(query),
        )
        with structlog.contextvars.bound_contextvars(incident_id=outcome.incident_id):
            if refusal is None:
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
