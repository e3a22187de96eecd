"""Silence and acknowledge taps on alert cards."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from telegram import Update
from telegram.ext import ContextTypes

from opsgate.bot.response_data import AckAction, SilenceAction, UnsilenceAction, decode
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.callback_actions import STALE, tapped_message
from opsgate.services.acks import AckService
from opsgate.services.approvals import Tapper
from opsgate.services.card_taps import TapAnswer
from opsgate.services.silences import SilenceService


@dataclass
class ResponseButtons:
    silences: SilenceService
    acks: AckService
    sender: TelegramSender

    async def on_tap(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        # The window for the answer opens when the tap arrives; Alertmanager's call fits in it.
        arrived = time.monotonic()
        query = update.callback_query
        if query is None:
            return
        user = query.from_user
        tapper = Tapper(user.id, user.username or "")
        origin = tapped_message(query)
        match decode(query.data):
            case SilenceAction(incident_id, hours):
                answer = await self.silences.silence(incident_id, tapper, hours, origin=origin)
            case UnsilenceAction(incident_id):
                answer = await self.silences.expire(incident_id, tapper, origin=origin)
            case AckAction(incident_id):
                answer = await self.acks.ack(incident_id, tapper, origin=origin)
            case _:
                answer = TapAnswer(STALE, True)
        with structlog.contextvars.bound_contextvars(incident_id=answer.incident_id):
            await self.sender.answer_callback(
                query.id, answer.text, alert=answer.alert, arrived=arrived
            )
