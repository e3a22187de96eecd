"""The one way out to Telegram. Every outbound call passes here, so rate limits, 429s,
"not modified" edits, supergroup migrations, removed bots and error mapping are handled in
one place. Sends and edits take their turn in :mod:`opsgate.bot.outbound`; callback answers
and the bot's own settings go straight out.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import aiohttp
from telegram import (
    Bot,
    BotCommand,
    ChatMemberAdministrator,
    ChatMemberRestricted,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from opsgate.bot import bot_api_client
from opsgate.bot.callback_answers import AnswerWindow, answer_in_window
from opsgate.bot.keyboards import (
    approval_keyboard,
    evidence_button,
    feedback_keyboard,
    retired_card_keyboard,
)
from opsgate.bot.outbound import OutboundScheduler, Priority
from opsgate.bot.render import card_html, duplicate_card_html, message_link, result_html
from opsgate.bot.render_digest import digest_html
from opsgate.bot.response_keyboard import response_row
from opsgate.bot.send_budget import FloodLimits, SendBudget
from opsgate.services.chat import (
    CardView,
    ChatGone,
    ChatMoved,
    ChatOutcomeUnknown,
    ChatRejected,
    ChatRetryLater,
    ChatTarget,
    ChatUnavailable,
    DigestView,
    MessageRef,
    ResultView,
)
from opsgate.services.chats import ChatDirectory

T = TypeVar("T")

# Telegram reports an edit that changes nothing only through this description; there is no
# error code or type for it, so this one text match is unavoidable.
NOT_MODIFIED = "message is not modified"
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def may_have_been_carried_out(exc: NetworkError) -> bool:
    """Whether Telegram may have done what a call that failed with ``exc`` asked.

    The bot's request (bot_api_client.AiohttpRequest) raises TimedOut / NetworkError *from*
    aiohttp's exception, which says how far the request got. Without such a cause the server
    answered with an error status, and an answer is an outcome. Any other cause (a read
    timeout, a dropped connection, an error inside the HTTP implementation) leaves open
    whether the request arrived.
    """
    cause = exc.__cause__
    if cause is None or isinstance(cause, TelegramError):
        return False
    return not isinstance(cause, bot_api_client.NOT_SENT)


class MessageUnchanged(ChatRejected):
    """An edit asked for what the message already shows: done, not an error."""


class TelegramSender:
    """Implements the domain's ChatPort on top of PTB's Bot; every send and edit waits for its
    turn in the outbound scheduler, at the priority of the method that made it."""

    def __init__(
        self,
        bot: Bot,
        chats: ChatDirectory,
        *,
        on_error: Callable[[str, str], None] | None = None,
        outbound: OutboundScheduler | None = None,
    ) -> None:
        self._bot = bot
        self._chats = chats
        self._on_error = on_error or (lambda _method, _kind: None)
        self._outbound = outbound or OutboundScheduler(SendBudget(FloodLimits.telegram()))

    async def close(self) -> None:
        await self._outbound.close()

    async def _call(
        self, method: str, call: Callable[[], Awaitable[T]], *, changes_chat: bool = False
    ) -> T:
        """``changes_chat``: the call posts or edits, so a lost answer leaves its outcome open."""
        try:
            return await call()
        except RetryAfter as exc:
            self._on_error(method, "rate_limited")
            raise ChatRetryLater(_seconds(exc), str(exc)) from exc
        except ChatMigrated as exc:
            self._on_error(method, "migrated")
            raise ChatMoved(exc.new_chat_id, f"{method}: {exc.message}") from exc
        except Forbidden as exc:
            self._on_error(method, "forbidden")
            raise ChatGone(f"{method}: {exc.message}") from exc
        except BadRequest as exc:
            if NOT_MODIFIED in exc.message.lower():
                raise MessageUnchanged(f"{method}: {exc.message}") from exc
            self._on_error(method, "rejected")
            raise ChatRejected(f"{method}: {exc.message}") from exc
        except NetworkError as exc:
            if changes_chat and may_have_been_carried_out(exc):
                self._on_error(method, "outcome_unknown")
                raise ChatOutcomeUnknown(f"{method}: {_describe(exc)}") from exc
            self._on_error(method, "unavailable")
            raise ChatUnavailable(f"{method}: {_describe(exc)}") from exc
        except TelegramError as exc:
            self._on_error(method, "rejected")
            raise ChatRejected(f"{method}: {exc.message}") from exc

    async def _in_chat(self, method: str, chat_id: int, call: Callable[[int], Awaitable[T]]) -> T:
        """Post or edit in the chat's current id; follow a migration once; remember a removed
        bot."""
        current = self._chats.resolve(chat_id)
        reason = self._chats.inactive_reason(current)
        if reason is not None:
            raise ChatGone(f"{method}: chat {current} is inactive ({reason})")
        try:
            return await call(current)
        except ChatMoved as moved:
            new_id = moved.new_chat_id
            await self._chats.migrated(current, new_id)
            return await call(new_id)
        except ChatGone as gone:
            await self._chats.deactivate(current, str(gone))
            raise

    async def _send(
        self,
        chat_id: int,
        priority: Priority,
        call: Callable[[int], Awaitable[Message]],
    ) -> Message:
        method = "sendMessage"

        async def in_turn(current: int) -> Message:
            return await self._outbound.send(
                current,
                priority,
                lambda: self._call(method, lambda: call(current), changes_chat=True),
            )

        return await self._in_chat(method, chat_id, in_turn)

    async def post_card(
        self, target: ChatTarget, card: CardView, *, on_request: bool = False
    ) -> MessageRef:
        message = await self._send(
            target.chat_id,
            Priority.COMMAND_ANSWER if on_request else Priority.NEW_CARD,
            lambda chat_id: self._bot.send_message(
                chat_id=chat_id,
                message_thread_id=target.thread_id,
                text=card_html(card),
                parse_mode=ParseMode.HTML,
                reply_markup=_markup(card),
                link_preview_options=NO_PREVIEW,
            ),
        )
        return _ref(message, target.thread_id)

    async def edit_card(self, ref: MessageRef, card: CardView) -> None:
        await self.edit_html(
            ref.chat_id, ref.message_id, card_html(card), _markup(card), priority=Priority.CARD_EDIT
        )

    async def post_digest(self, target: ChatTarget, digest: DigestView) -> MessageRef:
        # Before new cards: the digest is how the incidents waiting for them are seen at all.
        return await self.send_html(
            target.chat_id,
            digest_html(digest),
            thread_id=target.thread_id,
            priority=Priority.CARD_EDIT,
        )

    async def edit_digest(self, ref: MessageRef, digest: DigestView) -> None:
        await self.edit_html(
            ref.chat_id, ref.message_id, digest_html(digest), priority=Priority.CARD_EDIT
        )

    async def mark_duplicate(self, ref: MessageRef, incident_id: str, live: MessageRef) -> None:
        await self.edit_html(
            ref.chat_id,
            ref.message_id,
            duplicate_card_html(incident_id, live),
            priority=Priority.CARD_EDIT,
        )

    async def retire_card(self, ref: MessageRef, live: MessageRef) -> None:
        """Only the keyboard changes: the old card keeps what it says about its fix."""
        method = "editMessageReplyMarkup"
        markup = retired_card_keyboard(message_link(live))

        async def in_turn(current: int) -> None:
            await self._outbound.edit(
                current,
                ref.message_id,
                Priority.CARD_EDIT,
                lambda: self._call(
                    method,
                    lambda: self._bot.edit_message_reply_markup(
                        chat_id=current, message_id=ref.message_id, reply_markup=markup
                    ),
                    changes_chat=True,
                ),
            )

        with contextlib.suppress(MessageUnchanged):
            await self._in_chat(method, ref.chat_id, in_turn)

    async def edit_html(
        self,
        chat_id: int,
        message_id: int,
        html: str,
        markup: InlineKeyboardMarkup | None = None,
        *,
        priority: Priority = Priority.COMMAND_ANSWER,
    ) -> None:
        """Replace a message's text; no markup removes its keyboard; no change is no error.

        While it waits for its turn, a later edit of the same message replaces it."""
        method = "editMessageText"

        async def in_turn(current: int) -> None:
            await self._outbound.edit(
                current,
                message_id,
                priority,
                lambda: self._call(
                    method,
                    lambda: self._bot.edit_message_text(
                        chat_id=current,
                        message_id=message_id,
                        text=html,
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup,
                        link_preview_options=NO_PREVIEW,
                    ),
                    changes_chat=True,
                ),
            )

        with contextlib.suppress(MessageUnchanged):
            await self._in_chat(method, chat_id, in_turn)

    async def send_result(
        self, target: ChatTarget, reply_to: int | None, result: ResultView
    ) -> MessageRef:
        # Under the alert, people who saw the incident can say the diagnosis was wrong.
        markup = (
            feedback_keyboard(result.approval_id, undo=result.undoable)
            if reply_to is not None and result.approval_id
            else None
        )
        return await self.send_html(
            target.chat_id,
            result_html(result),
            thread_id=target.thread_id,
            reply_to=reply_to,
            markup=markup,
            priority=Priority.RESULT_REPLY,
        )

    async def send_result_copy(self, target: ChatTarget, result: ResultView) -> MessageRef:
        return await self.send_html(
            target.chat_id,
            result_html(result),
            thread_id=target.thread_id,
            priority=Priority.FANOUT_COPY,
        )

    async def send_html(
        self,
        chat_id: int,
        html: str,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        markup: InlineKeyboardMarkup | None = None,
        priority: Priority = Priority.COMMAND_ANSWER,
    ) -> MessageRef:
        # A reply never fails for want of its original: the text matters more than the link.
        reply = (
            ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            if reply_to is not None
            else None
        )
        message = await self._send(
            chat_id,
            priority,
            lambda current: self._bot.send_message(
                chat_id=current,
                message_thread_id=thread_id,
                text=html,
                parse_mode=ParseMode.HTML,
                reply_parameters=reply,
                reply_markup=markup,
                link_preview_options=NO_PREVIEW,
            ),
        )
        return _ref(message, thread_id)

    async def answer_callback(
        self, query_id: str, text: str, *, alert: bool, arrived: float | None = None
    ) -> None:
        """Answer a tap straight away, never behind the message budget, retrying lost answers
        while Telegram's window is open. ``arrived``: when the tap reached us, on
        :func:`time.monotonic`; the window counts from then (from now when not given)."""
        now = time.monotonic
        window = AnswerWindow(now() if arrived is None else arrived, now)
        await answer_in_window(
            query_id,
            lambda: self._call(
                "answerCallbackQuery",
                lambda: self._bot.answer_callback_query(
                    query_id, text=text[:200] or None, show_alert=alert
                ),
            ),
            window,
        )

    async def check_chat(self, chat_id: int) -> str | None:
        """Why the bot cannot post in ``chat_id``, or None when it can. Network trouble raises
        ChatUnavailable: it says nothing about the chat."""
        try:
            chat = await self._call("getChat", lambda: self._bot.get_chat(chat_id))
            if chat.type == ChatType.PRIVATE:
                return None
            member = await self._call(
                "getChatMember", lambda: self._bot.get_chat_member(chat_id, self._bot.id)
            )
        except ChatRejected as exc:
            return str(exc)
        if member.status in (ChatMemberStatus.LEFT, ChatMemberStatus.BANNED):
            return f"the bot is not a member of the {chat.type} (add @{self._bot.username})"
        if isinstance(member, ChatMemberAdministrator) or member.status == ChatMemberStatus.OWNER:
            if chat.type == ChatType.CHANNEL and not getattr(member, "can_post_messages", True):
                return "the bot is an administrator of the channel but may not post"
            return None
        if chat.type == ChatType.CHANNEL:
            return "the bot must be an administrator of the channel to post"
        if isinstance(member, ChatMemberRestricted) and not member.can_send_messages:
            return "the bot is restricted and may not send messages"
        if chat.permissions is not None and chat.permissions.can_send_messages is False:
            return "members may not send messages; make the bot an administrator"
        return None

    async def set_commands(self, commands: list[tuple[str, str]]) -> None:
        await self._call(
            "setMyCommands",
            lambda: self._bot.set_my_commands([BotCommand(c, d) for c, d in commands]),
        )

    async def set_webhook(self, url: str, secret: str, allowed_updates: list[str]) -> None:
        await self._call(
            "setWebhook",
            lambda: self._bot.set_webhook(
                url, secret_token=secret, allowed_updates=allowed_updates
            ),
        )


def _markup(card: CardView) -> InlineKeyboardMarkup | None:
    """Approve / Reject only while a decision is open, silence and ack while the incident
    fires, an agent's evidence on its cards; omitting the markup removes the keyboard."""
    rows: list[Sequence[InlineKeyboardButton]] = []
    if card.offers_buttons and card.approval_id is not None:
        keyboard = approval_keyboard(card.approval_id, approvable=card.approvable)
        rows.extend(keyboard.inline_keyboard)
    response = response_row(card)
    if response:
        rows.append(response)
    if card.agent:
        rows.append([evidence_button(card.incident_id)])
    return InlineKeyboardMarkup(rows) if rows else None


def _ref(message: Message, thread_id: int | None) -> MessageRef:
    return MessageRef(message.chat_id, message.message_id, message.message_thread_id or thread_id)


def _describe(exc: NetworkError) -> str:
    # A bare TimedOut says only "Timed out"; the HTTP client's exception says which phase timed
    # out.
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return f"{exc.message} (aiohttp.{type(cause).__name__})"
    return exc.message


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
