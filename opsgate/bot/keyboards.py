"""Inline keyboards."""

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from opsgate.bot.callback_data import (
    CardAction,
    EvidenceAction,
    FeedbackAction,
    PageAction,
    PagedView,
    UndoAction,
    encode,
)


def approval_keyboard(approval_id: str, *, approvable: bool = True) -> InlineKeyboardMarkup:
    """Approve and Reject; Reject alone while what would change cannot be shown."""
    reject = InlineKeyboardButton("❌ Reject", callback_data=encode(CardAction(False, approval_id)))
    if not approvable:
        return InlineKeyboardMarkup([[reject]])
    approve = encode(CardAction(True, approval_id))
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton("✅ Approve", callback_data=approve), reject]]
    )


def incidents_keyboard(offset: int, page_size: int, total: int) -> InlineKeyboardMarkup | None:
    """Prev / Next under /incidents, only where there is somewhere to go."""
    buttons = []
    if offset > 0:
        previous = PageAction(PagedView.INCIDENTS, max(0, offset - page_size))
        buttons.append(InlineKeyboardButton("◀ Prev", callback_data=encode(previous)))
    if offset + page_size < total:
        following = PageAction(PagedView.INCIDENTS, offset + page_size)
        buttons.append(InlineKeyboardButton("Next ▶", callback_data=encode(following)))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def timeline_keyboard(
    incident_id: str, offset: int, page_size: int, total: int
) -> InlineKeyboardMarkup | None:
    """Older / Newer under /timeline, which lists newest first: older is further down."""
    buttons = []
    if offset + page_size < total:
        older = PageAction(PagedView.TIMELINE, offset + page_size, incident_id)
        buttons.append(InlineKeyboardButton("⬅️ Older", callback_data=encode(older)))
    if offset > 0:
        newer = PageAction(PagedView.TIMELINE, max(0, offset - page_size), incident_id)
        buttons.append(InlineKeyboardButton("Newer ➡️", callback_data=encode(newer)))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def evidence_keyboard(incident_id: str, page: int, pages: int) -> InlineKeyboardMarkup | None:
    """Prev / Next under /evidence, by page number, only where there is somewhere to go."""
    buttons = []
    if page > 0:
        previous = PageAction(PagedView.EVIDENCE, page - 1, incident_id)
        buttons.append(InlineKeyboardButton("◀ Prev", callback_data=encode(previous)))
    if page + 1 < pages:
        following = PageAction(PagedView.EVIDENCE, page + 1, incident_id)
        buttons.append(InlineKeyboardButton("Next ▶", callback_data=encode(following)))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def evidence_button(incident_id: str) -> InlineKeyboardButton:
    """On an agent's card: its full evidence, posted as a reply to the card."""
    return InlineKeyboardButton("🧾 Evidence", callback_data=encode(EvidenceAction(incident_id)))


def feedback_keyboard(approval_id: str, *, undo: bool = False) -> InlineKeyboardMarkup:
    """Under a result; ``undo`` adds the button that proposes the inverse for approval."""
    data = encode(FeedbackAction(approval_id))
    row = [InlineKeyboardButton("👎 Wrong diagnosis", callback_data=data)]
    if undo:
        row.append(InlineKeyboardButton("↩️ Undo", callback_data=encode(UndoAction(approval_id))))
    return InlineKeyboardMarkup([row])


def retired_card_keyboard(live_link: str | None) -> InlineKeyboardMarkup | None:
    """What stays under a card that is no longer the incident's: a way to the one that is."""
    if live_link is None:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton("➡️ Current card", url=live_link)]])
