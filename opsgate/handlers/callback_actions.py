"""The first step of every button handler: decode the tap, or tell the user it is stale."""

from __future__ import annotations

from typing import TypeVar

from telegram import CallbackQuery

from opsgate.bot.callback_data import CardAction, FeedbackAction, PageAction, decode
from opsgate.bot.sender import TelegramSender

A = TypeVar("A", CardAction, PageAction, FeedbackAction)
STALE = "This button is not valid any more."


async def expect(sender: TelegramSender, query: CallbackQuery, kind: type[A]) -> A | None:
    """The tap's action if it is a ``kind``; otherwise the tap is answered and None returned."""
    action = decode(query.data)
    if isinstance(action, kind):
        return action
    await sender.answer_callback(query.id, STALE, alert=True)
    return None
