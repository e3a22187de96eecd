"""Inline keyboards."""

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from opsgate.bot.callback_data import CardAction, encode


def approval_keyboard(approval_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    "✅ Approve", callback_data=encode(CardAction(True, approval_id))
                ),
                InlineKeyboardButton(
                    "❌ Reject", callback_data=encode(CardAction(False, approval_id))
                ),
            ]
        ]
    )
