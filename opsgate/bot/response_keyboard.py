"""The card's row of silence and acknowledge buttons."""

from __future__ import annotations

from telegram import InlineKeyboardButton

from opsgate.bot.response_data import AckAction, SilenceAction, UnsilenceAction, encode
from opsgate.services.chat import CardView
from opsgate.services.silences import SILENCE_HOURS


def response_row(card: CardView) -> list[InlineKeyboardButton]:
    """While the incident fires: silence it (or expire its silence), and say who is on it.
    A silence still in place keeps its button after the incident resolved: it may still
    hold back the next firing."""
    silenced = card.silence is not None and card.silence.active
    row = []
    if silenced:
        expire = encode(UnsilenceAction(card.incident_id))
        row.append(InlineKeyboardButton("🔔 Expire silence", callback_data=expire))
    if card.incident_status != "firing":
        return row
    if card.silenceable and not silenced:
        row.extend(
            InlineKeyboardButton(
                f"🔕 {hours} h", callback_data=encode(SilenceAction(card.incident_id, hours))
            )
            for hours in SILENCE_HOURS
        )
    if not card.acked_by:
        ack = encode(AckAction(card.incident_id))
        row.append(InlineKeyboardButton("👀 Ack", callback_data=ack))
    return row
