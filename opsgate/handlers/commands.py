"""Chat commands: one handler per command, each asking a service and answering."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from telegram import InlineKeyboardMarkup, Message, Update, User
from telegram.ext import ContextTypes

from opsgate.bot.callback_data import EvidenceAction, PageAction, PagedView
from opsgate.bot.keyboards import evidence_keyboard, incidents_keyboard, timeline_keyboard
from opsgate.bot.render import e
from opsgate.bot.render_commands import (
    INCIDENTS_PAGE_SIZE,
    TIMELINE_PAGE_SIZE,
    audit_messages,
    help_html,
    incidents_page,
    knowledge_html,
    pending_messages,
    playbooks_messages,
    requested_card_html,
    status_html,
    timeline_page,
    whoami_html,
)
from opsgate.bot.render_evidence import evidence_pages
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.answers_first import AnswersFirst
from opsgate.handlers.callback_actions import (
    STALE,
    expect,
    offers_tapped_button,
    tapped_message,
)
from opsgate.services.approvals import NOT_HERE
from opsgate.services.cards import CardPublisher
from opsgate.services.chat import ChatError
from opsgate.services.chats import ChatDirectory
from opsgate.services.health import HealthService
from opsgate.services.ids import INCIDENT_ID
from opsgate.services.knowledge import KnowledgeService
from opsgate.services.playbooks import PlaybookService
from opsgate.services.policy_source import PolicySource
from opsgate.services.queries import IncidentQueries

Answer = tuple[str, InlineKeyboardMarkup | None]

CARD_USAGE = "Usage: /card INC-XXXXXXXX (the storm digest lists the incidents waiting for one)"
TIMELINE_USAGE = "Usage: /timeline INC-XXXXXXXX (or reply /timeline to an alert card)"
AUDIT_USAGE = "Usage: /audit [INC-XXXXXXXX]"
PLAYBOOK_USAGE = "Usage: /playbook approve N or /playbook retire N (see /playbooks)"
EVIDENCE_USAGE = "Usage: /evidence INC-…"
KB_USAGE = "Usage: /kb words to search for, e.g. /kb checkout restart"
NOT_MEMBER = "You are not in the opsgate policy. Send /whoami and ask an admin to add you."
NOT_APPROVER = "Only approvers see pending approvals. /incidents shows what is open."


@dataclass
class ChatCommands:
    queries: IncidentQueries
    health: HealthService
    knowledge: KnowledgeService
    playbooks: PlaybookService
    policy: PolicySource
    chats: ChatDirectory
    sender: TelegramSender
    cards: CardPublisher
    # Callback answers go first: a command waits for the answers of the taps fetched with it.
    order: AnswersFirst = field(default_factory=AnswersFirst)

    async def _answer(
        self, message: Message, html: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        thread = message.message_thread_id if message.is_topic_message else None
        await self.sender.send_html(
            message.chat_id, html, thread_id=thread, reply_to=message.message_id, markup=markup
        )

    async def _asked(self, update: Update) -> tuple[Message, User] | None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return None
        await self.order.after_answers()
        # A chat that talks to the bot has evidently not removed it.
        await self.chats.activate(message.chat_id)
        return message, user

    async def _member(self, update: Update) -> tuple[Message, User] | None:
        asked = await self._asked(update)
        if asked is None:
            return None
        if not self.policy.current().is_member(asked[1].id):
            await self._answer(asked[0], NOT_MEMBER)
            return None
        return asked

    async def on_help(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._asked(update)
        if asked is not None:
            user_id, policy = asked[1].id, self.policy.current()
            html = help_html(member=policy.is_member(user_id), approver=policy.can_approve(user_id))
            await self._answer(asked[0], html)

    async def on_whoami(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._asked(update)
        if asked is not None:
            message, user = asked
            group = None if message.chat.type == "private" else message.chat_id
            topic = message.message_thread_id if message.is_topic_message else None
            policy = self.policy.current()
            html = whoami_html(
                user.id,
                user.username,
                policy.roles_of(user.id),
                entry_roles=policy.entry_roles(user.id),
                chat_id=group,
                topic=topic,
            )
            await self._answer(message, html)

    async def on_incidents(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is None:
            return
        await self._answer(asked[0], *await self._incidents(0))

    async def _incidents(self, offset: int) -> Answer:
        page = await self.queries.open_incidents(offset, INCIDENTS_PAGE_SIZE)
        markup = incidents_keyboard(page.offset, INCIDENTS_PAGE_SIZE, page.total)
        return incidents_page(page), markup

    async def _timeline(self, incident_id: str, offset: int) -> Answer | None:
        page = await self.queries.timeline(incident_id, offset, TIMELINE_PAGE_SIZE)
        if page is None:
            return None
        markup = timeline_keyboard(incident_id, page.offset, TIMELINE_PAGE_SIZE, page.total)
        return timeline_page(page), markup

    async def _evidence(self, incident_id: str, page: int) -> Answer | None:
        """One page of the latest agent proposal's evidence; a page past the end (the
        evidence was replaced meanwhile) shows the last."""
        found = await self.queries.agent_evidence(incident_id)
        if found is None:
            return None
        pages = evidence_pages(incident_id, *found)
        page = max(0, min(page, len(pages) - 1))
        return pages[page], evidence_keyboard(incident_id, page, len(pages))

    async def on_page(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """Prev / Next under /incidents and /evidence, Older / Newer under /timeline: the
        same message is edited, nothing new is posted."""
        arrived = time.monotonic()
        query = update.callback_query
        if query is None or query.message is None:
            return
        action = await expect(self.sender, query, PageAction, arrived=arrived)
        if action is None:
            return
        if not offers_tapped_button(query):
            # Paging data copied onto another message (an alert card, a result) must not
            # turn that message into a list and take its buttons away.
            await self.sender.answer_callback(query.id, NOT_HERE, alert=True, arrived=arrived)
            return
        if not self.policy.current().is_member(query.from_user.id):
            await self.sender.answer_callback(query.id, NOT_MEMBER, alert=True, arrived=arrived)
            return
        match action.view:
            case PagedView.INCIDENTS:
                shown: Answer | None = await self._incidents(action.offset)
            case PagedView.TIMELINE:
                shown = await self._timeline(action.subject, action.offset)
            case PagedView.EVIDENCE:
                shown = await self._evidence(action.subject, action.offset)
        if shown is None:
            await self.sender.answer_callback(query.id, STALE, alert=True, arrived=arrived)
            return
        await self.sender.answer_callback(query.id, "", alert=False, arrived=arrived)
        await self.sender.edit_html(query.message.chat.id, query.message.message_id, *shown)

    async def on_pending(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is None:
            return
        if not self.policy.current().can_approve(asked[1].id):
            await self._answer(asked[0], NOT_APPROVER)
            return
        for html in pending_messages(await self.queries.pending_approvals()):
            await self._answer(asked[0], html)

    async def on_audit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is None:
            return
        args = context.args or []
        incident_id = args[0].strip().upper() if len(args) == 1 else None
        if len(args) > 1 or (incident_id is not None and not INCIDENT_ID.match(incident_id)):
            await self._answer(asked[0], AUDIT_USAGE)
            return
        named = {"incident_id": incident_id} if incident_id else {}
        with structlog.contextvars.bound_contextvars(**named):
            rows = await self.queries.audit(incident_id)
            if rows is None:
                await self._answer(asked[0], f"No incident {e(incident_id)} is known.")
                return
            for html in audit_messages(rows, incident_id):
                await self._answer(asked[0], html)

    async def on_status(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is not None:
            await self._answer(asked[0], status_html(await self.health.report()))

    async def on_timeline(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is None:
            return
        message = asked[0]
        incident_id = await self._incident_argument(message, context.args)
        if incident_id is None:
            await self._answer(message, TIMELINE_USAGE)
            return
        with structlog.contextvars.bound_contextvars(incident_id=incident_id):
            shown = await self._timeline(incident_id, 0)
            if shown is None:
                await self._answer(message, f"No incident {e(incident_id)} is known.")
                return
            await self._answer(message, *shown)

    async def on_card(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/card INC-…``: the card of an incident the digest lists, ahead of new cards."""
        asked = await self._member(update)
        if asked is None:
            return
        message = asked[0]
        args = context.args or []
        incident_id = args[0].strip().upper() if len(args) == 1 else ""
        if not INCIDENT_ID.match(incident_id):
            await self._answer(message, CARD_USAGE)
            return
        try:
            requested = await self.cards.post_on_request(incident_id)
        except ChatError as exc:
            await self._answer(message, f"The card of {e(incident_id)} was not posted: {e(exc)}")
            return
        html = requested_card_html(requested, message.chat_id)
        card = requested.card
        if html is None:
            return
        if card is not None and card.chat_id == message.chat_id:
            await self.sender.send_html(
                card.chat_id, html, thread_id=card.thread_id, reply_to=card.message_id
            )
            return
        await self._answer(message, html)

    async def _incident_argument(self, message: Message, args: list[str] | None) -> str | None:
        if args:
            candidate = args[0].strip().upper()
            return candidate if len(args) == 1 and INCIDENT_ID.match(candidate) else None
        replied = message.reply_to_message
        # In a forum topic every message "replies" to the topic's first message; that is no card.
        if replied is not None and replied.forum_topic_created is None:
            return await self.queries.incident_for_card(message.chat_id, replied.message_id)
        return None

    async def on_kb(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is None:
            return
        words = " ".join(context.args or []).strip()
        if not words:
            await self._answer(asked[0], KB_USAGE)
            return
        hits = await self.knowledge.search(words)
        await self._answer(asked[0], knowledge_html(words, hits))

    async def on_evidence(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is None:
            return
        args = context.args or []
        incident_id = args[0].strip().upper() if len(args) == 1 else ""
        if not INCIDENT_ID.match(incident_id):
            await self._answer(asked[0], EVIDENCE_USAGE)
            return
        shown = await self._evidence(incident_id, 0)
        if shown is None:
            await self._answer(asked[0], f"No agent proposed anything for {e(incident_id)}.")
            return
        await self._answer(asked[0], *shown)

    async def on_evidence_tap(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """ "Evidence" on an agent's card: the first page, posted as a reply to the card (the
        card itself stays as it is); its page buttons then edit that reply."""
        arrived = time.monotonic()
        query = update.callback_query
        if query is None:
            return
        action = await expect(self.sender, query, EvidenceAction, arrived=arrived)
        if action is None:
            return
        card = tapped_message(query)
        if card is None or not offers_tapped_button(query):
            await self.sender.answer_callback(query.id, NOT_HERE, alert=True, arrived=arrived)
            return
        if not self.policy.current().is_member(query.from_user.id):
            await self.sender.answer_callback(query.id, NOT_MEMBER, alert=True, arrived=arrived)
            return
        with structlog.contextvars.bound_contextvars(incident_id=action.incident_id):
            shown = await self._evidence(action.incident_id, 0)
            if shown is None:
                await self.sender.answer_callback(query.id, STALE, alert=True, arrived=arrived)
                return
            await self.sender.answer_callback(query.id, "", alert=False, arrived=arrived)
            await self.sender.send_html(
                card.chat_id,
                shown[0],
                thread_id=card.thread_id,
                reply_to=card.message_id,
                markup=shown[1],
            )

    async def on_playbooks(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        asked = await self._member(update)
        if asked is not None:
            for html in playbooks_messages(await self.playbooks.listing()):
                await self._answer(asked[0], html)

    async def on_playbook(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/playbook approve N`` or ``/playbook retire N``, for admins."""
        asked = await self._member(update)
        if asked is None:
            return
        message, user = asked
        args = context.args or []
        if len(args) != 2 or args[0] not in ("approve", "retire") or not args[1].isdigit():
            await self._answer(message, PLAYBOOK_USAGE)
            return
        if not self.policy.current().is_admin(user.id):
            await self._answer(message, "Only admins approve or retire playbooks.")
            return
        who = f"@{user.username}" if user.username else f"id {user.id}"
        answer = await self.playbooks.decide(int(args[1]), args[0] == "approve", who)
        await self._answer(message, e(answer))

    async def on_unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Only when the command was meant for us: groups also carry other bots' commands."""
        message = update.effective_message
        if message is None or not message.text:
            return
        command = message.text.split()[0]
        addressed = command.lower().endswith(f"@{context.bot.username.lower()}")
        if message.chat.type == "private" or addressed:
            await self._answer(message, f"Unknown command {e(command)}. /help lists mine.")
