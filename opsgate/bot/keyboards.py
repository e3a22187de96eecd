"""Inline keyboards."""

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from opsgate.bot.callback_data import CardAction, FeedbackAction, PageAction, encode


def approval_keyboard(approval_id: str) -> InlineKeyboardMarkup:
    approve = encode(CardAction(True, approval_id))
    reject = encode(CardAction(False, approval_id))
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Approve", callback_data=approve),
                InlineKeyboardButton("❌ Reject", callback_data=reject),
            ]
        ]
    )


def pager_keyboard(
    view: str, offset: int, page_size: int, total: int
) -> InlineKeyboardMarkup | None:
    """Prev / Next, only where there is somewhere to go."""
    buttons = []
    if offset > 0:
        previous = PageAction(view, max(0, offset - page_size))
        buttons.append(InlineKeyboardButton("◀ Prev", callback_data=encode(previous)))
    if offset + page_size < total:
        following = PageAction(view, offset + page_size)
        buttons.append(InlineKeyboardButton("Next ▶", callback_data=encode(following)))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def feedback_keyboard(approval_id: str) -> InlineKeyboardMarkup:
    data = encode(FeedbackAction(approval_id))
    return InlineKeyboardMarkup([[InlineKeyboardButton("👎 Wrong diagnosis", callback_data=data)]])
