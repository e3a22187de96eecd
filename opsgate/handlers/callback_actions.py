"""The first step of every button handler: decode the tap, or tell the user it is stale."""

from __future__ import annotations

from typing import TypeVar

from telegram import CallbackQuery, Message

from opsgate.bot.callback_data import (
    CardAction,
    EvidenceAction,
    FeedbackAction,
    PageAction,
    UndoAction,
    decode,
)
from opsgate.bot.sender import TelegramSender
from opsgate.services.chat import MessageRef

A = TypeVar("A", CardAction, PageAction, FeedbackAction, UndoAction, EvidenceAction)
STALE = "This button is not valid any more."


async def expect(
    sender: TelegramSender, query: CallbackQuery, kind: type[A], *, arrived: float
) -> A | None:
    """The tap's action if it is a ``kind``; otherwise the tap is answered and None returned.

    ``arrived``: when the tap reached the handler (:func:`time.monotonic`), which opens the
    window for its answer."""
    action = decode(query.data)
    if isinstance(action, kind):
        return action
    await sender.answer_callback(query.id, STALE, alert=True, arrived=arrived)
    return None


def tapped_message(query: CallbackQuery) -> MessageRef | None:
    """The message carrying the tapped button, when Telegram still gives it in full."""
    message = query.message
    # A message the bot cannot see any more (PTB decodes it with date 0), or a button on an
    # inline message, gives no card to bind the tap to.
    if not isinstance(message, Message) or not message.is_accessible:
        return None
    return MessageRef(message.chat_id, message.message_id, message.message_thread_id)


def offers_tapped_button(query: CallbackQuery) -> bool:
    """Whether the tapped message, as Telegram delivers it now, carries the tapped button.

    Telegram sends the message itself, keyboard included, while the data comes from the client;
    data that no button of the message carries was copied or forged.
    """
    message = query.message
    if not isinstance(message, Message) or not message.is_accessible:
        return False
    if message.reply_markup is None:
        return False
    return any(
        button.callback_data == query.data
        for row in message.reply_markup.inline_keyboard
        for button in row
    )
