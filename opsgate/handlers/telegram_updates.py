"""PTB handlers: one per job, each a few lines that call a service and answer."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from telegram import Message, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from opsgate.bot.callback_data import decode
from opsgate.bot.render import timeline_messages
from opsgate.bot.sender import TelegramSender
from opsgate.services.approvals import ApprovalService, Tapper
from opsgate.services.policy import Policy
from opsgate.services.queries import INCIDENT_ID, IncidentQueries

log = structlog.get_logger(__name__)

COMMANDS = [("timeline", "Timeline of an incident: /timeline INC-…")]
TIMELINE_USAGE = "Usage: /timeline INC-XXXXXXXX (or reply /timeline to an alert card)"


@dataclass
class TelegramHandlers:
    approvals: ApprovalService
    queries: IncidentQueries
    sender: TelegramSender
    policy: Policy
    alert_chat_id: int

    def register(self, application: Application) -> None:  # type: ignore[type-arg]
        application.add_handler(CallbackQueryHandler(self.on_card_button))
        application.add_handler(CommandHandler("timeline", self.on_timeline))
        application.add_error_handler(self.on_error)

    async def on_card_button(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        action = decode(query.data)
        if action is None:
            await self.sender.answer_callback(
                query.id, "This button is not valid any more.", alert=True
            )
            return
        user = query.from_user
        outcome = await self.approvals.decide(
            action.approval_id, Tapper(user.id, user.username or ""), action.approve
        )
        await self.sender.answer_callback(query.id, outcome.text, alert=outcome.alert)

    async def on_timeline(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        thread = message.message_thread_id if message.is_topic_message else None
        if message.chat_id != self.alert_chat_id and not self.policy.roles_of(user.id):
            await self.sender.send_html(
                message.chat_id,
                "You are not in the opsgate policy; ask an admin to add your id "
                f"(<code>{user.id}</code>).",
                thread_id=thread,
                reply_to=message.message_id,
            )
            return
        incident_id = await self._incident_argument(message.chat_id, context.args, message)
        if incident_id is None:
            await self.sender.send_html(
                message.chat_id, TIMELINE_USAGE, thread_id=thread, reply_to=message.message_id
            )
            return
        events = await self.queries.timeline(incident_id)
        if events is None:
            await self.sender.send_html(
                message.chat_id,
                f"No incident {incident_id} is known.",
                thread_id=thread,
                reply_to=message.message_id,
            )
            return
        for html in timeline_messages(incident_id, events):
            await self.sender.send_html(
                message.chat_id, html, thread_id=thread, reply_to=message.message_id
            )

    async def _incident_argument(
        self, chat_id: int, args: list[str] | None, message: Message
    ) -> str | None:
        if args:
            candidate = args[0].strip().upper()
            return candidate if len(args) == 1 and INCIDENT_ID.match(candidate) else None
        replied = message.reply_to_message
        # In a forum topic every message "replies" to the topic's first message; that is no card.
        if replied is not None and replied.forum_topic_created is None:
            return await self.queries.incident_for_card(chat_id, replied.message_id)
        return None

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram_handler_failed", error=repr(context.error), exc_info=context.error)
