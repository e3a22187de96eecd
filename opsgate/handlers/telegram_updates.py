"""Which PTB handler answers which update."""

from __future__ import annotations

import structlog
from telegram import Update
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from opsgate.bot.callback_data import EVIDENCE, PAGE, UNDO, VERSION, WRONG_DIAGNOSIS
from opsgate.bot.response_data import CODES as RESPONSE_CODES
from opsgate.handlers.card_buttons import CardButtons
from opsgate.handlers.chat_members import ChatMembers
from opsgate.handlers.commands import ChatCommands
from opsgate.handlers.feedback_buttons import FeedbackButtons
from opsgate.handlers.response_buttons import ResponseButtons
from opsgate.handlers.undo_buttons import UndoButtons

log = structlog.get_logger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.MY_CHAT_MEMBER]


def register(
    application: Application,  # type: ignore[type-arg]
    buttons: CardButtons,
    feedback: FeedbackButtons,
    commands: ChatCommands,
    members: ChatMembers,
    responses: ResponseButtons,
    undo: UndoButtons | None = None,
) -> None:
    application.add_handler(CallbackQueryHandler(commands.on_page, pattern=f"^{VERSION}:{PAGE}:"))
    application.add_handler(
        CallbackQueryHandler(commands.on_evidence_tap, pattern=f"^{VERSION}:{EVIDENCE}:")
    )
    application.add_handler(
        CallbackQueryHandler(feedback.on_tap, pattern=f"^{VERSION}:{WRONG_DIAGNOSIS}:")
    )
    application.add_handler(
        CallbackQueryHandler(responses.on_tap, pattern=f"^{VERSION}:({'|'.join(RESPONSE_CODES)}):")
    )
    if undo is not None:
        application.add_handler(CallbackQueryHandler(undo.on_tap, pattern=f"^{VERSION}:{UNDO}:"))
    application.add_handler(CallbackQueryHandler(buttons.on_tap))
    for name, handler in (
        ("start", commands.on_help),
        ("help", commands.on_help),
        ("whoami", commands.on_whoami),
        ("incidents", commands.on_incidents),
        ("pending", commands.on_pending),
        ("audit", commands.on_audit),
        ("status", commands.on_status),
        ("timeline", commands.on_timeline),
        ("card", commands.on_card),
        ("kb", commands.on_kb),
        ("evidence", commands.on_evidence),
        ("playbooks", commands.on_playbooks),
        ("playbook", commands.on_playbook),
    ):
        application.add_handler(CommandHandler(name, handler))
    application.add_handler(MessageHandler(filters.COMMAND, commands.on_unknown))
    application.add_handler(
        ChatMemberHandler(members.on_my_membership, ChatMemberHandler.MY_CHAT_MEMBER)
    )
    application.add_error_handler(on_error)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("telegram_handler_failed", error=repr(context.error), exc_info=context.error)
