"""A stateful, strict loopback stand-in for the Telegram Bot API server, for opsgate's tests.

Why it exists: a ChatOps bot fails in production on what Telegram *rejects* - an unescaped ``<``
in an alert title, callback data over 64 bytes, an edit that changes nothing, a reply to a message
that was deleted, a callback query nobody answered. A mock of python-telegram-bot's ``Bot`` accepts
all of that. So this module serves the Bot API's HTTP protocol itself on 127.0.0.1, the real PTB
``Application`` talks to it through ``base_url`` (real request encoding, real error mapping, real
``Updater`` long polling), and it refuses what Telegram refuses with the same status codes and
descriptions that production error handling matches on.

Tests act as users (:meth:`FakeTelegram.send_text`, :meth:`FakeTelegram.tap`) and read per-chat
transcripts (:meth:`FakeTelegram.messages`), so they assert on what people in the chat would see.
Crash tests hold calls in flight or hold their answers back (:meth:`FakeTelegram.hold`,
:meth:`FakeTelegram.hold_answer`) and spread webhook deliveries over several replicas
(:meth:`FakeTelegram.route_webhook_to`).

Deliberate differences from the real server (each one errs towards failing a test):

* only ``parse_mode=HTML`` is modelled; Markdown modes are refused rather than accepted unchecked;
* an unknown named HTML entity such as ``&nbsp;`` is refused; Telegram shows it verbatim, which in
  practice is always a bug in the sender;
* inline messages, cross-chat replies and file uploads are not modelled and are refused;
* webhook URLs may be plain ``http`` (the receiver is a loopback test server);
* webhook updates are delivered one at a time in update order, where Telegram keeps several
  connections busy; per-chat order, which is all Telegram promises, holds either way;
* privacy mode is on, as for every new bot: group messages reach the bot only when they are a
  command for it (unaddressed commands count, as if it were the only bot in the group) or a reply
  to one of its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from opsgate.sandbox.loopback import LoopbackServer
from opsgate.sandbox.request_holds import HeldRequest, Hold, pass_holds

JsonDict = dict[str, Any]
_T = TypeVar("_T")
_Handler = Callable[[JsonDict], Awaitable[Any]]

MAX_TEXT_LENGTH = 4096  # UTF-16 code units of visible text
MAX_CALLBACK_DATA_BYTES = 64
MAX_INLINE_BUTTONS = 100
MAX_CALLBACK_ANSWER_LENGTH = 200
MAX_COMMANDS = 100

NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)
POLLING_CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
_FORBIDDEN = {
    "private": "Forbidden: bot was blocked by the user",
    "group": "Forbidden: bot was kicked from the group chat",
    "supergroup": "Forbidden: bot was kicked from the supergroup chat",
    "channel": "Forbidden: bot is not a member of the channel chat",
}
_CHAT_TYPES = frozenset(_FORBIDDEN)
_GLOBAL_SCOPES = frozenset(
    {"default", "all_private_chats", "all_group_chats", "all_chat_administrators"}
)
_BUTTON_ACTIONS = frozenset(
    {
        "callback_data",
        "url",
        "login_url",
        "web_app",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)
_TOPIC_ICON_COLOR = 0x6FB9F0  # the first of the six colours Telegram allows for topic icons

# How each parameter is typed on the wire. Clients send form fields in which non-strings are JSON
# text (``chat_id=-100``, ``show_alert=true``, ``reply_markup={...}``); everything not listed here
# is a string. A generic json.loads would turn a message text of "42" into an int.
_INT_PARAMS = frozenset(
    {
        "message_id",
        "message_thread_id",
        "reply_to_message_id",
        "offset",
        "limit",
        "cache_time",
        "max_connections",
        "user_id",
    }
)
_FLOAT_PARAMS = frozenset({"timeout"})  # PTB sends a fractional long-poll timeout as "1.5"
_BOOL_PARAMS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "allow_sending_without_reply",
        "allow_paid_broadcast",
        "show_alert",
        "drop_pending_updates",
    }
)
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "reply_parameters",
        "allowed_updates",
        "link_preview_options",
        "commands",
        "scope",
    }
)

_PATH = re.compile(r"/bot(?P<token>[^/]+)/(?P<method>[^/]+)")
_INTEGER = re.compile(r"[+-]?\d+")
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_LANGUAGE_CODE = re.compile(r"[a-z]{2}")
_LEADING_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@(?P<username>[A-Za-z0-9_]{3,32}))?(?![\w@])")


class BotApiError(Exception):
    """A refusal in the Bot API's error shape; the HTTP status always equals ``error_code``."""

    def __init__(self, status: int, description: str, parameters: JsonDict | None = None) -> None:
        super().__init__(description)
        self.status = int(status)
        self.description = description
        self.parameters = parameters or {}

    def to_api(self) -> JsonDict:
        body: JsonDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> BotApiError:
    return BotApiError(HTTPStatus.BAD_REQUEST, f"Bad Request: {detail}")


def too_many_requests(retry_after: int) -> BotApiError:
    return BotApiError(
        HTTPStatus.TOO_MANY_REQUESTS,
        f"Too Many Requests: retry after {retry_after}",
        {"retry_after": retry_after},
    )


def utf16_len(text: str) -> int:
    """Telegram measures text in UTF-16 code units: an emoji outside the BMP counts twice."""
    return len(text.encode("utf-16-le")) // 2


# ---------------------------------------------------------------------------------------------
# Request decoding


def decode_params(raw: Mapping[str, Any]) -> JsonDict:
    """Type every parameter as the Bot API does, whichever encoding the client chose.

    Values are first brought back to their wire form (a JSON body already carries types, and the
    server accepts JSON-in-a-string for object fields there too), then parsed per field.
    """
    return {name: _decode_value(name, value) for name, value in raw.items()}


def _decode_value(name: str, value: Any) -> Any:
    wire = value if isinstance(value, str) else json.dumps(value)
    if name in _JSON_PARAMS:
        try:
            return json.loads(wire)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None
    if name == "chat_id":
        # A non-numeric chat_id is a channel username; usernames are not modelled -> not found.
        return int(wire) if _INTEGER.fullmatch(wire) else wire
    if name in _INT_PARAMS:
        if not _INTEGER.fullmatch(wire):
            raise bad_request(f"invalid {name} specified")
        return int(wire)
    if name in _FLOAT_PARAMS:
        try:
            return float(wire)
        except ValueError:
            raise bad_request(f"invalid {name} specified") from None
    if name in _BOOL_PARAMS:
        flag = {"true": True, "1": True, "false": False, "0": False}.get(wire.lower())
        if flag is None:
            raise bad_request(f"invalid {name} specified")
        return flag
    return wire


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query-string and body parameters together: the Bot API accepts either, or both."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise bad_request("can't parse JSON encoded request") from None
        if not isinstance(body, dict):
            raise bad_request("can't parse JSON encoded request")
        params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        params.update({name: value for name, value in form.items() if isinstance(value, str)})
    return params


# ---------------------------------------------------------------------------------------------
# Message text: Telegram-flavoured HTML


class FormattedText(NamedTuple):
    """Visible text plus the entities Telegram derived from the markup."""

    text: str
    entities: list[JsonDict]


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}
# Bot API's date-time formats: relative, or any of weekday, date (short/long), time (short/long).
_DATE_TIME_FORMAT = re.compile(r"r|w?[dD]?[tT]?")
_NAMED_REFERENCES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_NUMERIC_REFERENCE = re.compile(r"&#(?:x(?P<hex>[0-9a-fA-F]*)|(?P<dec>[0-9]*))")
_NAMED_REFERENCE = re.compile(r"&(?P<name>[A-Za-z]*)")
_UNKNOWN_NAMED_REFERENCE = re.compile(r"&[A-Za-z]+;")
_SPACE = " \t\r\n\v\f"
_END = "\0"  # tdlib scans a NUL-terminated string; past the end, _peek() returns this


@dataclass
class _OpenTag:
    name: str
    argument: str
    offset: int  # UTF-16 offset of the entity in the visible text
    first_chunk: int  # index into the output chunks where the entity's text starts


class _HtmlParser:
    """A port of tdlib's ``parse_html`` scanner, the code behind the Bot API's HTML mode.

    Following its control flow (rather than using html.parser) is what makes the refusals match:
    the same inputs fail, with the same messages and the same UTF-8 byte offsets.
    """

    def __init__(self, source: str) -> None:
        self._src = source
        self._pos = 0
        self._chunks: list[str] = []
        self._utf16 = 0
        self._open: list[_OpenTag] = []
        self._entities: list[JsonDict] = []

    def parse(self) -> FormattedText:
        while self._pos < len(self._src):
            char = self._src[self._pos]
            if char == "&":
                self._reference()
            elif char != "<":
                self._emit(char)
                self._pos += 1
            elif self._peek(1) == "/":
                self._end_tag()
            else:
                self._start_tag()
        if self._open:
            raise self._error(
                f'Can\'t find end tag corresponding to start tag "{self._open[-1].name}"'
            )
        for entity in self._entities:
            if entity["type"] == "code":
                entity.pop("language", None)  # a language only survives on a <pre>
        entities = sorted(self._entities, key=lambda e: (e["offset"], -e["length"]))
        return FormattedText("".join(self._chunks), entities)

    def _peek(self, ahead: int = 0) -> str:
        index = self._pos + ahead
        return self._src[index] if index < len(self._src) else _END

    def _at_space(self) -> bool:
        return self._peek() in _SPACE or self._peek() == _END

    def _skip_spaces(self) -> None:
        while self._pos < len(self._src) and self._src[self._pos] in _SPACE:
            self._pos += 1

    def _error(self, detail: str) -> BotApiError:
        return bad_request(f"can't parse entities: {detail}")

    def _error_at(self, detail: str, index: int) -> BotApiError:
        """tdlib reports positions as UTF-8 byte offsets into the source text."""
        return self._error(f"{detail} at byte offset {self._byte_offset(index)}")

    def _byte_offset(self, index: int) -> int:
        return len(self._src[:index].encode())

    def _emit(self, text: str) -> None:
        self._chunks.append(text)
        self._utf16 += utf16_len(text)

    def _decode_reference(self, pos: int) -> tuple[str, int] | None:
        """tdlib's decode_html_entity: the character and where it ends, or None for a literal &."""
        numeric = _NUMERIC_REFERENCE.match(self._src, pos)
        if numeric:
            digits = numeric["hex"] if numeric["hex"] is not None else numeric["dec"]
            code = int(digits, 16 if numeric["hex"] is not None else 10) if digits else 0
            if code == 0 or code >= 0x10FFFF or numeric.end() - pos >= 10:
                return None
            if 0xD800 <= code <= 0xDFFF:
                raise self._error(
                    "Text contains invalid Unicode characters after decoding HTML entities, "
                    "check for unmatched surrogate code units"
                )
            char, end = chr(code), numeric.end()
        else:
            named = _NAMED_REFERENCE.match(self._src, pos)
            if named is None or named["name"] not in _NAMED_REFERENCES:
                return None
            char, end = _NAMED_REFERENCES[named["name"]], named.end()
        return char, end + 1 if self._src.startswith(";", end) else end

    def _reference(self) -> None:
        decoded = self._decode_reference(self._pos)
        if decoded is not None:
            self._emit(decoded[0])
            self._pos = decoded[1]
            return
        unknown = _UNKNOWN_NAMED_REFERENCE.match(self._src, self._pos)
        if unknown:  # stricter than tdlib on purpose, see the module docstring
            raise self._error_at(f'Unsupported HTML entity "{unknown.group()}"', self._pos)
        self._emit("&")
        self._pos += 1

    def _start_tag(self) -> None:
        begin = self._pos
        self._pos += 1
        while not self._at_space() and self._peek() != ">":
            self._pos += 1
        if self._peek() == _END:
            raise self._error_at("Unclosed start tag", begin)
        name = self._src[begin + 1 : self._pos].lower()
        if name not in _HTML_TAGS:
            raise self._error_at(f'Unsupported start tag "{name}"', begin)
        argument = ""
        while self._peek() != ">":
            self._skip_spaces()
            if self._peek() == ">":
                break
            attribute_begin = self._pos
            while not self._at_space() and self._peek() not in "=>":
                self._pos += 1
            attribute = self._src[attribute_begin : self._pos]
            if not attribute:
                raise self._error_at(f'Empty attribute name in the tag "{name}"', begin)
            self._skip_spaces()
            if self._peek() != "=":
                if name == "blockquote" and attribute == "expandable":
                    argument = "expandable"
                    continue
                raise self._error_at(
                    f'Expected equal sign in declaration of an attribute of the tag "{name}"', begin
                )
            self._pos += 1
            self._skip_spaces()
            if self._peek() == _END:
                raise self._error_at(f'Unclosed start tag "{name}"', begin)
            value = self._attribute_value()
            if self._peek() == _END:
                raise self._error_at("Unclosed start tag", begin)
            argument = _tag_argument(name, attribute, value, argument)
        if name == "span" and argument != "spoiler":
            raise self._error_at('Tag "span" must have class "tg-spoiler"', begin)
        self._pos += 1
        self._open.append(_OpenTag(name, argument, self._utf16, len(self._chunks)))

    def _attribute_value(self) -> str:
        quote = self._peek()
        if quote not in "'\"":
            begin = self._pos
            while self._peek().isascii() and (self._peek().isalnum() or self._peek() in ".-"):
                self._pos += 1
            if not self._at_space() and self._peek() != ">":
                raise self._error_at("Unexpected end of name token", begin)
            return self._src[begin : self._pos].lower()
        self._pos += 1
        chars: list[str] = []
        while self._peek() not in (quote, _END):
            decoded = self._decode_reference(self._pos) if self._peek() == "&" else None
            if decoded is not None:
                chars.append(decoded[0])
                self._pos = decoded[1]
            else:
                chars.append(self._peek())
                self._pos += 1
        if self._peek() == quote:
            self._pos += 1
        return "".join(chars)

    def _end_tag(self) -> None:
        begin = self._pos
        if not self._open:
            raise self._error_at("Unexpected end tag", begin)
        self._pos += 2
        while not self._at_space() and self._peek() != ">":
            self._pos += 1
        end_name = self._src[begin + 2 : self._pos]
        self._skip_spaces()
        if self._peek() != ">":
            raise self._error_at("Unclosed end tag", begin)
        self._pos += 1
        tag = self._open.pop()
        if end_name and end_name != tag.name:
            raise self._error(
                f"Unmatched end tag at byte offset {self._byte_offset(begin)}, "
                f'expected "</{tag.name}>", found "</{end_name}>"'
            )
        self._close_entity(tag)

    def _close_entity(self, tag: _OpenTag) -> None:
        """Record the entity a closing tag ends; empty ones vanish, as in tdlib."""
        length = self._utf16 - tag.offset
        if length <= 0:
            return
        entity: JsonDict = {"type": _HTML_TAGS[tag.name], "offset": tag.offset, "length": length}
        if tag.name == "a":
            entity["url"] = tag.argument or "".join(self._chunks[tag.first_chunk :])
        elif tag.name == "code" and tag.argument:
            entity["language"] = tag.argument  # kept only if a <pre> wraps exactly this code
        elif tag.name == "pre" and self._entities:
            inner = self._entities[-1]
            same_span = (inner["offset"], inner["length"]) == (tag.offset, length)
            if same_span and inner["type"] == "code" and "language" in inner:
                self._entities[-1] = {**entity, "language": inner["language"]}
                return
        elif tag.name == "blockquote" and tag.argument:
            entity["type"] = "expandable_blockquote"
        elif tag.name == "tg-emoji":
            if not tag.argument:
                return
            entity["custom_emoji_id"] = tag.argument
        elif tag.name == "tg-time":
            entity.update(self._date_time(tag.argument))
        self._entities.append(entity)

    def _date_time(self, argument: str) -> JsonDict:
        # Stricter than tdlib on purpose: a time Telegram cannot show is a bug in the sender.
        unix, _, fmt = argument.partition("|")
        if not unix.isdigit():
            raise self._error('Tag "tg-time" must have an integer attribute "unix"')
        if not _DATE_TIME_FORMAT.fullmatch(fmt):
            raise self._error(f'Invalid date and time format "{fmt}" in the tag "tg-time"')
        entity: JsonDict = {"unix_time": int(unix)}
        if fmt:
            entity["date_time_format"] = fmt
        return entity


def _tag_argument(tag: str, attribute: str, value: str, current: str) -> str:
    """The one attribute each tag cares about; tdlib ignores all others."""
    if tag == "a" and attribute == "href":
        return value
    if tag == "code" and attribute == "class" and value.startswith("language-"):
        return value.removeprefix("language-")
    if tag == "span" and attribute == "class" and value.startswith("tg-"):
        return value.removeprefix("tg-")
    if tag == "tg-emoji" and attribute == "emoji-id":
        return value
    if tag == "tg-time" and attribute in ("unix", "format"):
        unix, _, fmt = current.partition("|")
        return f"{value}|{fmt}" if attribute == "unix" else f"{unix}|{value}"
    return current


def parse_html(source: str) -> FormattedText:
    """Visible text and entities of Telegram-flavoured HTML, or the Bot API's refusal."""
    return _HtmlParser(source).parse()


def _trim(formatted: FormattedText) -> FormattedText:
    """Telegram strips surrounding whitespace from message text and clips entities to match."""
    text = formatted.text.strip(_SPACE)
    lead = utf16_len(formatted.text) - utf16_len(formatted.text.lstrip(_SPACE))
    size = utf16_len(text)
    entities = []
    for entity in formatted.entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, size)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return FormattedText(text, entities)


def format_message_text(text: str | None, parse_mode: str | None) -> FormattedText:
    """What the chat will show for ``text``, with Telegram's emptiness and length rules."""
    if not text:
        raise bad_request("message text is empty")
    mode = (parse_mode or "").lower()
    if mode == "html":
        formatted = parse_html(text)
    elif mode == "":
        formatted = FormattedText(text, [])
    elif mode in ("markdown", "markdownv2"):
        raise bad_request(f"parse_mode {parse_mode} is not modelled by the fake Bot API; use HTML")
    else:
        raise bad_request("unsupported parse_mode")
    formatted = _trim(formatted)
    if not formatted.text:
        raise bad_request("message text is empty")
    if utf16_len(formatted.text) > MAX_TEXT_LENGTH:
        raise bad_request("message is too long")
    return formatted


# ---------------------------------------------------------------------------------------------
# Reply markup


def parse_reply_markup(markup: Any, *, inline_only: bool) -> JsonDict | None:
    """The inline keyboard to store on the message, or None when it has none.

    Reply keyboards, ForceReply and ReplyKeyboardRemove are accepted by sendMessage but, as on
    Telegram, never become part of the message's ``reply_markup``; edits take inline keyboards only.
    """
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        return _parse_inline_keyboard(markup["inline_keyboard"])
    if inline_only:
        raise bad_request("inline keyboard expected")
    if markup.keys() & {"keyboard", "remove_keyboard", "force_reply"}:
        return None
    raise bad_request("can't parse reply keyboard markup JSON object")


def _parse_inline_keyboard(rows: Any) -> JsonDict | None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(
            'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
        )
    buttons = [button for row in rows for button in row]
    if len(buttons) > MAX_INLINE_BUTTONS:
        raise bad_request("REPLY_MARKUP_TOO_LONG")
    for button in buttons:
        _check_inline_button(button)
    return {"inline_keyboard": [row for row in rows if row]} if buttons else None


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise bad_request(
            "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
        )
    if not isinstance(button.get("text"), str) or not button["text"]:
        raise bad_request("can't parse inline keyboard button: Text must be non-empty")
    if not button.keys() & _BUTTON_ACTIONS:
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")


# ---------------------------------------------------------------------------------------------
# Test-facing records


@dataclass(frozen=True)
class FakeUser:
    id: int
    username: str
    first_name: str
    is_bot: bool = False

    def to_api(self) -> JsonDict:
        return {
            "id": self.id,
            "is_bot": self.is_bot,
            "first_name": self.first_name,
            "username": self.username,
        }


@dataclass
class FakeMessage:
    """One message of a transcript. Objects are live: an edit updates the one a test holds."""

    chat_id: int
    message_id: int
    sender: FakeUser
    date: int
    text: str  # as sent or last edited: the HTML source when parse_mode was HTML
    plain_text: str  # what people see: tags stripped, references decoded, trimmed
    entities: list[JsonDict] = field(default_factory=list)
    reply_markup: JsonDict | None = None
    reply_to_message_id: int | None = None
    message_thread_id: int | None = None
    edit_date: int | None = None
    history: list[str] = field(default_factory=list)  # the previous ``text``, one per edit

    @property
    def from_bot(self) -> bool:
        return self.sender.is_bot

    @property
    def edit_count(self) -> int:
        return len(self.history)

    @property
    def buttons(self) -> list[tuple[str, str | None]]:
        """(text, callback_data) of every inline button, row by row; None for URL buttons etc."""
        rows = self.reply_markup["inline_keyboard"] if self.reply_markup else []
        return [(button["text"], button.get("callback_data")) for row in rows for button in row]

    def summary(self) -> str:
        who = "bot" if self.from_bot else f"@{self.sender.username}"
        line = f"#{self.message_id} {who}: {self.plain_text!r}"
        if self.buttons:
            line += f" buttons={self.buttons}"
        return line + (f" (edited {self.edit_count}x)" if self.history else "")


@dataclass(frozen=True)
class CallbackAnswer:
    text: str | None
    show_alert: bool
    cache_time: int


@dataclass
class FakeCallbackQuery:
    id: str
    chat_id: int
    message_id: int
    user: FakeUser
    data: str
    answer: CallbackAnswer | None = None


@dataclass(frozen=True)
class ApiCall:
    method: str
    params: JsonDict  # decoded: ints, bools and JSON objects as Python values
    status: int
    at: float  # time.time()
    description: str | None = None  # the error description when status != 200

    def __str__(self) -> str:
        outcome = f"{self.status} {self.description}" if self.description else str(self.status)
        return f"{self.method} -> {outcome} {json.dumps(self.params, ensure_ascii=False)[:300]}"


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to POST an update to the webhook; only a 2xx acknowledges the update."""

    update_id: int
    url: str
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str | None  # as getWebhookInfo's last_error_message would say; None when acknowledged
    at: float = field(default_factory=time.time)

    @property
    def acknowledged(self) -> bool:
        return self.error is None


@dataclass
class _Chat:
    id: int
    type: str
    title: str
    is_forum: bool
    created: int
    topics: dict[int, str] = field(default_factory=dict)
    blocked: bool = False
    messages: dict[int, FakeMessage] = field(default_factory=dict)
    next_message_id: int = 1
    recent_sends: deque[float] = field(default_factory=deque)
    bot_status: str = "member"  # the bot's getChatMember status: member, administrator, left
    members_can_post: bool = True  # the group's default permission can_send_messages

    def to_api(self) -> JsonDict:
        payload: JsonDict = {"id": self.id, "type": self.type}
        payload["first_name" if self.type == "private" else "title"] = self.title
        if self.is_forum:
            payload["is_forum"] = True
        return payload


@dataclass
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    last_error_date: int | None = None
    last_error_message: str | None = None


# ---------------------------------------------------------------------------------------------
# The server


class FakeTelegram(LoopbackServer):
    """The Bot API server for one bot, plus the levers and transcripts tests need.

    Every state change (an API call, a user action) wakes :meth:`wait_for` waiters and pending
    long polls, so tests never sleep.
    """

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        bot_id: int | None = None,
        bot_username: str = "opsgate_bot",
        *,
        privacy_mode: bool = True,
        webhook_retry_delay: float = 0.1,
        webhook_timeout: float = 10.0,
    ) -> None:
        self.token = token
        self.bot_user = FakeUser(
            id=bot_id if bot_id is not None else int(token.split(":", 1)[0]),
            username=bot_username,
            first_name=bot_username,
            is_bot=True,
        )
        self.calls: list[ApiCall] = []  # calls carried out or refused, as they were answered
        self.webhook_deliveries: list[WebhookDelivery] = []  # every attempt, in order
        self.commands: dict[tuple[str, str], list[JsonDict]] = {}  # (scope, language) -> commands
        self._privacy_mode = privacy_mode
        self._webhook_retry_delay = webhook_retry_delay
        self._webhook_timeout = webhook_timeout
        self._webhook_routes: list[str] | None = None
        self._webhook_turn = 0
        self._holds: list[Hold] = []  # before the call is carried out
        self._answer_holds: list[Hold] = []  # after, before it is answered
        self._waiting_polls = 0
        self._chats: dict[int, _Chat] = {}
        self._updates: list[JsonDict] = []
        self._update_ids = itertools.count(1)
        self._query_ids = itertools.count(4_000_000_000_000_000_001)
        self._callback_queries: dict[str, FakeCallbackQuery] = {}
        self._allowed_updates: list[str] | None = None
        self._webhook: _Webhook | None = None
        self._poll_generation = 0
        self._injected: dict[str, deque[BotApiError]] = {}
        self._answer_delays: dict[str, deque[float]] = {}
        self._stopped = asyncio.Event()
        self._rate_limit: tuple[int, float] | None = None
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._root_url: str | None = None
        handlers: dict[str, _Handler] = {
            "getMe": self._get_me,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._answer_callback_query,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "close": self._return_true,
            "logOut": self._return_true,
        }
        # Bot API method names are case-insensitive; calls are recorded under the canonical name.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 on a free port and start the webhook delivery loop."""
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        # handler_cancellation: a long poll whose client went away must not linger (and must not
        # count as a competing getUpdates), exactly as on the real server.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._root_url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._webhook_timeout)
        )
        self._delivery = asyncio.create_task(self._deliver_webhook_updates(self._session))

    async def stop(self) -> None:
        """Release pending long polls, stop webhook delivery, close the server."""
        self._closing = True
        for hold in self._holds + self._answer_holds:
            hold.abandon()
        self._stopped.set()
        self._touch()
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``; PTB wants ``base_url=f"{root_url}/bot"``."""
        if self._root_url is None:
            raise RuntimeError("FakeTelegram is not started")
        return self._root_url

    # -- arranging the world --------------------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        type: str = "supergroup",
        title: str = "On-call",
        is_forum: bool = False,
        *,
        bot_status: str = "member",
        members_can_post: bool = True,
    ) -> None:
        """Make a chat known; any other chat_id is "chat not found". For a private chat the title
        is the user's first name. ``bot_status`` "left" (the bot was added, then left) or a group
        whose members may not post make sends fail as on Telegram; a channel needs the bot to be
        an administrator."""
        if chat_id in self._chats:
            raise ValueError(f"chat {chat_id} already exists")
        if type not in _CHAT_TYPES:
            raise ValueError(f"chat type must be one of {sorted(_CHAT_TYPES)}, not {type!r}")
        if is_forum and type != "supergroup":
            raise ValueError("only supergroups can be forums")
        if bot_status not in ("member", "administrator", "left"):
            raise ValueError(f"bot_status: member, administrator or left, not {bot_status!r}")
        self._chats[chat_id] = _Chat(
            chat_id,
            type,
            title,
            is_forum,
            created=int(time.time()),
            bot_status=bot_status,
            members_can_post=members_can_post,
        )

    def add_topic(self, chat_id: int, thread_id: int, name: str | None = None) -> None:
        """Register a forum topic. Its id is the id of its creation message, so later message ids
        in the chat are numbered past it."""
        chat = self._chat_for_test(chat_id)
        if not chat.is_forum:
            raise ValueError(f"chat {chat_id} is not a forum; add_chat(..., is_forum=True)")
        chat.topics[thread_id] = name or f"Topic {thread_id}"
        chat.next_message_id = max(chat.next_message_id, thread_id + 1)

    def block_chat(self, chat_id: int) -> None:
        """The user blocked the bot (private) or removed it (groups): further sends get 403."""
        self._chat_for_test(chat_id).blocked = True

    def user(self, user_id: int, username: str, first_name: str | None = None) -> FakeUser:
        return FakeUser(id=user_id, username=username, first_name=first_name or username)

    def set_chat_rate_limit(self, max_messages: int | None, window: float = 60.0) -> None:
        """Answer 429 once a chat got ``max_messages`` sends or edits within ``window`` seconds
        (Telegram's own limits are about 1/s per private chat and 20/min per group). None turns
        enforcement off, which is the default."""
        self._rate_limit = None if max_messages is None else (max_messages, window)

    def inject_error(
        self,
        method: str,
        *,
        status: int | None = None,
        retry_after: int | None = 1,
        description: str | None = None,
        migrate_to_chat_id: int | None = None,
        count: int = 1,
    ) -> None:
        """Fail the next ``count`` calls of ``method`` before they touch any state.

        ``status`` defaults to 429, or to 400 when ``migrate_to_chat_id`` is given (Telegram's
        answer after a group became a supergroup). ``retry_after`` is sent with 429 only.
        """
        canonical = self._canonical_method(method)
        if status is None:
            status = HTTPStatus.BAD_REQUEST if migrate_to_chat_id is not None else 429
        parameters: JsonDict = {}
        if status == HTTPStatus.TOO_MANY_REQUESTS and retry_after is not None:
            parameters["retry_after"] = retry_after
        if migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = migrate_to_chat_id
        if description is None:
            if migrate_to_chat_id is not None:
                description = "Bad Request: group chat was upgraded to a supergroup chat"
            elif "retry_after" in parameters:
                description = f"Too Many Requests: retry after {retry_after}"
            else:
                description = HTTPStatus(status).phrase
        queue = self._injected.setdefault(canonical, deque())
        queue.extend(BotApiError(status, description, parameters) for _ in range(count))

    def hold(self, method: str, *, chat_id: int | None = None, count: int = 1) -> Hold:
        """Keep the next ``count`` calls of ``method`` (for ``chat_id``, if given) in flight, not
        yet carried out, until ``release()``; one whose client went away is dropped and never
        carried out (nor recorded in :attr:`calls`). Holds come before injected errors."""
        hold = Hold(method, self._hold_matcher(method, chat_id), count)
        self._holds.append(hold)
        return hold

    def hold_answer(self, method: str, *, chat_id: int | None = None, count: int = 1) -> Hold:
        """Carry out the next ``count`` successful calls of ``method`` (for ``chat_id``, if
        given), then keep their answers until ``release()`` or until the client goes away.

        A held sendMessage is in the transcript, with its message id, while the bot still waits
        for the answer that would tell it that id; refusals are answered at once and do not count.
        """
        hold = Hold(f"answer to {method}", self._hold_matcher(method, chat_id), count)
        self._answer_holds.append(hold)
        return hold

    def _hold_matcher(self, method: str, chat_id: int | None) -> Callable[[HeldRequest], bool]:
        canonical = self._canonical_method(method)

        def matches(request: HeldRequest) -> bool:
            return request.method == canonical and chat_id in (None, request.params.get("chat_id"))

        return matches

    def route_webhook_to(self, origins: Sequence[str] | None) -> None:
        """Deliver webhook updates to these origins in turn, as a load balancer in front of
        replicas would; None goes back to the URL given to setWebhook.

        Each origin is ``scheme://host:port``; the path and query of the setWebhook URL are kept,
        and so is its secret token. Every attempt goes to the next origin, so an update that one
        replica did not acknowledge is retried at the next.
        """
        if origins is None:
            self._webhook_routes = None
            return
        if not origins:
            raise ValueError("give at least one origin, or None")
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) origin: {origin!r}")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"an origin has no path; setWebhook gives it: {origin!r}")
        self._webhook_routes = list(origins)

    def delay_answer(self, method: str, seconds: float, *, count: int = 1) -> None:
        """Carry out the next ``count`` calls of ``method`` at once, but answer each only
        ``seconds`` later: a loaded Bot API, or an answer lost on its way back.

        The call's effect is in the transcript and in :attr:`calls` before the answer leaves; a
        client that gives up meanwhile just never learns of it. Stopping the fake ends the wait.
        """
        canonical = self._canonical_method(method)
        self._answer_delays.setdefault(canonical, deque()).extend([seconds] * count)

    # -- acting as users ------------------------------------------------------------------------

    def send_text(
        self,
        chat_id: int,
        user: FakeUser,
        text: str,
        *,
        reply_to_message_id: int | None = None,
        message_thread_id: int | None = None,
    ) -> FakeMessage:
        """A user writes ``text``. It joins the transcript, and becomes an update unless privacy
        mode hides it from the bot. A leading /command gets its bot_command entity."""
        chat = self._chat_for_test(chat_id)
        if reply_to_message_id is not None and reply_to_message_id not in chat.messages:
            raise AssertionError(f"chat {chat_id} has no message {reply_to_message_id}")
        if message_thread_id is not None and message_thread_id not in chat.topics:
            raise AssertionError(f"chat {chat_id} has no topic {message_thread_id}; add_topic()")
        if message_thread_id is None and reply_to_message_id is not None:
            message_thread_id = chat.messages[reply_to_message_id].message_thread_id
        command = _LEADING_COMMAND.match(text)
        entities = (
            [{"type": "bot_command", "offset": 0, "length": utf16_len(command.group())}]
            if command
            else []
        )
        message = self._append_message(
            chat,
            user,
            text,
            FormattedText(text, entities),
            reply_markup=None,
            reply_to_message_id=reply_to_message_id,
            message_thread_id=message_thread_id,
        )
        if self._visible_to_bot(chat, message, command):
            self._queue_update("message", self._message_to_api(message))
        return message

    def tap(self, chat_id: int, message_id: int, user: FakeUser, data: str) -> str:
        """A user taps the inline button carrying ``data``; returns the callback query id.

        Fails the test if the message has no such button *now*: a keyboard that an edit already
        removed cannot be tapped.
        """
        message = self.message(chat_id, message_id)
        if data not in [callback_data for _, callback_data in message.buttons]:
            raise AssertionError(
                f"message {message_id} in chat {chat_id} has no button with callback_data "
                f"{data!r}; its buttons now: {message.buttons}"
            )
        return self._queue_tap(message, user, data)

    def tap_stale(self, chat_id: int, message_id: int, user: FakeUser, data: str) -> str:
        """A tap from a client still showing a keyboard that an edit has since removed.

        Telegram delivers such taps: a phone that missed the edit keeps the old buttons.
        """
        return self._queue_tap(self.message(chat_id, message_id), user, data)

    def tap_forged(self, chat_id: int, message_id: int, user: FakeUser, data: str) -> str:
        """A tap carrying ``data`` that the message never offered: a modified client, or data
        copied from another card. What a bot must not trust is which card the data names."""
        return self._queue_tap(self.message(chat_id, message_id), user, data)

    def _queue_tap(self, message: FakeMessage, user: FakeUser, data: str) -> str:
        chat_id, message_id = message.chat_id, message.message_id
        query = FakeCallbackQuery(str(next(self._query_ids)), chat_id, message_id, user, data)
        self._callback_queries[query.id] = query
        self._queue_update(
            "callback_query",
            {
                "id": query.id,
                "from": user.to_api(),
                "message": self._message_to_api(message),
                "chat_instance": str(abs(chat_id)),
                "data": data,
            },
        )
        return query.id

    # -- reading what happened ------------------------------------------------------------------

    def messages(self, chat_id: int) -> list[FakeMessage]:
        """The chat's transcript in order: user and bot messages, edits applied in place."""
        return list(self._chat_for_test(chat_id).messages.values())

    def message(self, chat_id: int, message_id: int) -> FakeMessage:
        chat = self._chat_for_test(chat_id)
        if message_id not in chat.messages:
            raise AssertionError(f"chat {chat_id} has no message {message_id}")
        return chat.messages[message_id]

    @property
    def waiting_long_polls(self) -> int:
        """getUpdates calls now waiting for updates; a killed bot's poll ends when its connection
        closes, so this tells a test that the server noticed."""
        return self._waiting_polls

    def unanswered_callback_queries(self) -> list[FakeCallbackQuery]:
        """Telegram shows a spinner on the button until the bot answers; this must end empty."""
        return [query for query in self._callback_queries.values() if query.answer is None]

    # ASYNC109: the timeout is part of the assertion (it goes into the failure report), so it
    # belongs here rather than in a surrounding asyncio.timeout().
    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after every state change.

        On timeout, raises TimeoutError listing recent calls, transcripts and unanswered queries.
        """
        what = getattr(predicate, "__qualname__", repr(predicate))
        await self._wait_until(lambda: True if predicate() else None, timeout, what)

    async def wait_answer(self, callback_query_id: str, timeout: float = 5.0) -> CallbackAnswer:
        if callback_query_id not in self._callback_queries:
            raise AssertionError(f"no callback query {callback_query_id}")
        query = self._callback_queries[callback_query_id]
        return await self._wait_until(
            lambda: query.answer, timeout, f"an answer to callback query {callback_query_id}"
        )

    async def _wait_until(self, probe: Callable[[], _T | None], within: float, what: str) -> _T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            changed = self._changed
            value = probe()
            if value is not None:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_report(what, within))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _timeout_report(self, what: str, timeout: float) -> str:
        lines = [f"timed out after {timeout:g}s waiting for {what}"]
        recent = [call for call in self.calls if call.method != "getUpdates"][-15:]
        lines.append("recent Bot API calls (getUpdates left out):")
        lines += [f"  {call}" for call in recent] or ["  (none)"]
        if self._updates:
            lines.append(f"{len(self._updates)} update(s) not yet confirmed by the bot")
        for chat in self._chats.values():
            if chat.messages:
                lines.append(f"chat {chat.id} ({chat.type} {chat.title!r}), last messages:")
                lines += [f"  {message.summary()}" for message in chat.messages.values()][-10:]
        unanswered = self.unanswered_callback_queries()
        if unanswered:
            lines.append(f"unanswered callback queries: {unanswered}")
        return "\n".join(lines)

    # -- plumbing -------------------------------------------------------------------------------

    def _touch(self) -> None:
        """Wake everyone waiting for a change: set the current event and start a new one."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _canonical_method(self, method: str) -> str:
        if method.lower() not in self._methods:
            raise ValueError(f"the fake Bot API does not implement {method!r}")
        return self._methods[method.lower()][0]

    def _chat_for_test(self, chat_id: int) -> _Chat:
        if chat_id not in self._chats:
            raise AssertionError(f"chat {chat_id} is unknown; add_chat() it first")
        return self._chats[chat_id]

    def _visible_to_bot(
        self, chat: _Chat, message: FakeMessage, command: re.Match[str] | None
    ) -> bool:
        if not self._privacy_mode or chat.type == "private":
            return True
        replied = chat.messages.get(message.reply_to_message_id or 0)
        if replied is not None and replied.from_bot:
            return True
        if command is None:
            return False
        addressee = command["username"]
        return addressee is None or addressee.lower() == self.bot_user.username.lower()

    def _append_message(
        self,
        chat: _Chat,
        sender: FakeUser,
        source: str,
        formatted: FormattedText,
        *,
        reply_markup: JsonDict | None,
        reply_to_message_id: int | None,
        message_thread_id: int | None,
    ) -> FakeMessage:
        message = FakeMessage(
            chat_id=chat.id,
            message_id=chat.next_message_id,
            sender=sender,
            date=int(time.time()),
            text=source,
            plain_text=formatted.text,
            entities=formatted.entities,
            reply_markup=reply_markup,
            reply_to_message_id=reply_to_message_id,
            message_thread_id=message_thread_id,
        )
        chat.next_message_id += 1
        chat.messages[message.message_id] = message
        self._touch()
        return message

    def _queue_update(self, kind: str, payload: JsonDict) -> None:
        self._updates.append({"update_id": next(self._update_ids), kind: payload})
        self._touch()

    def _deliverable_updates(self) -> list[JsonDict]:
        """Pending updates; those of a type the bot opted out of are dropped, as Telegram does."""
        allowed = self._allowed_updates
        if allowed is not None:
            self._updates = [u for u in self._updates if _update_type(u) in allowed]
        return list(self._updates)

    def _message_to_api(self, message: FakeMessage, *, with_reply: bool = True) -> JsonDict:
        chat = self._chats[message.chat_id]
        payload: JsonDict = {
            "message_id": message.message_id,
            "from": message.sender.to_api(),
            "chat": chat.to_api(),
            "date": message.date,
            "text": message.plain_text,
        }
        if message.entities:
            payload["entities"] = message.entities
        if message.reply_markup is not None:
            payload["reply_markup"] = message.reply_markup
        if message.edit_date is not None:
            payload["edit_date"] = message.edit_date
        thread_id = message.message_thread_id
        if thread_id is not None:
            payload["message_thread_id"] = thread_id
            payload["is_topic_message"] = True
        if with_reply and message.reply_to_message_id is not None:
            replied = chat.messages[message.reply_to_message_id]
            payload["reply_to_message"] = self._message_to_api(replied, with_reply=False)
        elif with_reply and thread_id is not None:
            # Telegram quirk: a topic message that replies to nothing still carries the topic's
            # creation message as reply_to_message. Code that treats that as "a reply" breaks.
            payload["reply_to_message"] = {
                "message_id": thread_id,
                "from": self.bot_user.to_api(),
                "chat": chat.to_api(),
                "date": chat.created,
                "message_thread_id": thread_id,
                "is_topic_message": True,
                "forum_topic_created": {
                    "name": chat.topics[thread_id],
                    "icon_color": _TOPIC_ICON_COLOR,
                },
            }
        return payload

    # -- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        match = _PATH.fullmatch(request.path)
        method = match["method"] if match else request.path
        params: JsonDict = {}
        try:
            params = await _read_params(request)  # kept raw if decoding below fails
            if match is None:
                raise BotApiError(HTTPStatus.NOT_FOUND, "Not Found")
            if match["token"] != self.token:
                raise BotApiError(HTTPStatus.UNAUTHORIZED, "Unauthorized")
            if method.lower() not in self._methods:
                raise BotApiError(HTTPStatus.NOT_FOUND, "Not Found")
            method, handler = self._methods[method.lower()]
            params = decode_params(params)
            await pass_holds(self._holds, HeldRequest(method, request.path, params), request)
            injected = self._injected.get(method)
            if injected:
                raise injected.popleft()
            result = await handler(params)
        except BotApiError as error:
            self._record(method, params, error.status, error.description)
            return web.json_response(error.to_api(), status=error.status)
        self._record(method, params, HTTPStatus.OK, None)
        await pass_holds(self._answer_holds, HeldRequest(method, request.path, params), request)
        delays = self._answer_delays.get(method)
        if delays:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delays.popleft())
        return web.json_response({"ok": True, "result": result})

    def _record(self, method: str, params: JsonDict, status: int, description: str | None) -> None:
        self.calls.append(ApiCall(method, params, int(status), time.time(), description))
        self._touch()

    def _resolve_chat(self, params: Mapping[str, Any]) -> _Chat:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        chat = self._chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise bad_request("chat not found")
        return chat

    def _writable_chat(self, params: JsonDict) -> _Chat:
        chat = self._visible_chat(params)
        if chat.type == "private" or chat.bot_status == "administrator":
            return chat
        if chat.bot_status == "left":
            raise BotApiError(
                HTTPStatus.FORBIDDEN, f"Forbidden: bot is not a member of the {chat.type} chat"
            )
        if chat.type == "channel":
            raise bad_request("need administrator rights in the channel chat")
        if not chat.members_can_post:
            raise bad_request("not enough rights to send text messages to the chat")
        return chat

    def _visible_chat(self, params: Mapping[str, Any]) -> _Chat:
        chat = self._resolve_chat(params)
        if chat.blocked:
            raise BotApiError(HTTPStatus.FORBIDDEN, _FORBIDDEN[chat.type])
        return chat

    def _spend_rate_limit(self, chat: _Chat) -> None:
        if self._rate_limit is None:
            return
        max_messages, window = self._rate_limit
        now = time.monotonic()
        while chat.recent_sends and chat.recent_sends[0] <= now - window:
            chat.recent_sends.popleft()
        if len(chat.recent_sends) >= max_messages:
            raise too_many_requests(max(1, math.ceil(chat.recent_sends[0] + window - now)))
        chat.recent_sends.append(now)

    def _set_allowed_updates(self, allowed: Any) -> None:
        if not isinstance(allowed, list) or not all(isinstance(kind, str) for kind in allowed):
            raise bad_request("can't parse allowed_updates JSON object")
        self._allowed_updates = allowed or None  # [] means "the default set"

    # -- Bot API methods ------------------------------------------------------------------------

    async def _return_true(self, params: JsonDict) -> bool:
        return True

    async def _get_me(self, params: JsonDict) -> JsonDict:
        return {
            **self.bot_user.to_api(),
            "can_join_groups": True,
            "can_read_all_group_messages": not self._privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_chat(self, params: JsonDict) -> JsonDict:
        """ChatFullInfo, as far as opsgate reads it: type, title and the members' permissions."""
        chat = self._visible_chat(params)
        payload = {**chat.to_api(), "accent_color_id": 0, "max_reaction_count": 11}
        if chat.type in ("group", "supergroup"):
            payload["permissions"] = {"can_send_messages": chat.members_can_post}
        return payload

    async def _get_chat_member(self, params: JsonDict) -> JsonDict:
        chat = self._visible_chat(params)
        user_id = params.get("user_id")
        if not isinstance(user_id, int):
            raise bad_request("invalid user_id specified")
        if user_id != self.bot_user.id:
            # Users who never joined are "left"; the stand-in models no members but the bot.
            user = {"id": user_id, "is_bot": False, "first_name": str(user_id)}
            return {"status": "left", "user": user}
        member: JsonDict = {"status": chat.bot_status, "user": self.bot_user.to_api()}
        if chat.bot_status == "administrator":
            rights = [
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_promote_members",
                "can_change_info",
                "can_invite_users",
                "can_post_stories",
                "can_edit_stories",
                "can_delete_stories",
                "can_post_messages",
            ]
            member |= {"can_be_edited": False, "is_anonymous": False}
            member |= dict.fromkeys(rights, True)
        return member

    async def _get_updates(self, params: JsonDict) -> list[JsonDict]:
        """Long polling with Telegram's confirm-by-offset semantics.

        Updates stay queued until a later call's ``offset`` passes them, so a bot that crashed
        mid-batch gets them again. A newer getUpdates terminates an older pending one with 409.
        """
        if self._webhook is not None:
            raise BotApiError(HTTPStatus.CONFLICT, WEBHOOK_CONFLICT)
        self._poll_generation += 1
        generation = self._poll_generation
        offset = params.get("offset")
        if offset is not None and offset < 0:
            self._updates = self._updates[offset:]
        elif offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if "allowed_updates" in params:
            self._set_allowed_updates(params["allowed_updates"])
        limit = min(max(params.get("limit") or 100, 1), 100)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(params.get("timeout") or 0.0, 0.0)
        while True:
            if generation != self._poll_generation:
                raise BotApiError(HTTPStatus.CONFLICT, POLLING_CONFLICT)
            if self._webhook is not None:
                raise BotApiError(HTTPStatus.CONFLICT, WEBHOOK_CONFLICT)
            updates = self._deliverable_updates()
            remaining = deadline - loop.time()
            if updates or remaining <= 0 or self._closing:
                return updates[:limit]
            self._waiting_polls += 1
            # Wakes an older pending poll, which ends with 409 now rather than at the next update.
            self._touch()
            changed = self._changed
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
            finally:
                self._waiting_polls -= 1
                if not changed.is_set():  # timed out, or the client went away: say so
                    self._touch()

    async def _set_webhook(self, params: JsonDict) -> bool:
        url = params.get("url") or ""
        if not url:  # an empty url removes the webhook
            return await self._delete_webhook(params)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN.fullmatch(secret):
            raise bad_request("secret token contains unallowed characters")
        if "allowed_updates" in params:
            self._set_allowed_updates(params["allowed_updates"])
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook = _Webhook(url, secret, params.get("max_connections") or 40)
        self._touch()
        return True

    async def _delete_webhook(self, params: JsonDict) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook = None
        self._touch()
        return True

    async def _get_webhook_info(self, params: JsonDict) -> JsonDict:
        info: JsonDict = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._deliverable_updates()),
        }
        hook = self._webhook
        if hook is not None:
            info["url"] = hook.url
            info["max_connections"] = hook.max_connections
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
        if self._allowed_updates is not None:
            info["allowed_updates"] = self._allowed_updates
        return info

    async def _deliver_webhook_updates(self, session: aiohttp.ClientSession) -> None:
        """POST queued updates to the webhook one at a time, in order, until each gets a 2xx.

        Telegram keeps an update queued until the receiver accepts it; one request in flight
        keeps transcripts deterministic.
        """
        while True:
            changed = self._changed
            hook = self._webhook
            updates = self._deliverable_updates() if hook is not None else []
            if hook is None or not updates:
                await changed.wait()
                continue
            update = updates[0]
            error = await self._post_update(session, hook, update)
            if error is None:
                self._updates = [u for u in self._updates if u is not update]
            else:
                hook.last_error_date = int(time.time())
                hook.last_error_message = error
            self._touch()
            if error is not None:
                await asyncio.sleep(self._webhook_retry_delay)

    async def _post_update(
        self, session: aiohttp.ClientSession, hook: _Webhook, update: JsonDict
    ) -> str | None:
        """Deliver one update; the error for getWebhookInfo, or None on success."""
        headers = {}
        if hook.secret_token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret_token
        url = self._delivery_url(hook)
        status: int | None = None
        error: str | None = None
        try:
            async with session.post(url, json=update, headers=headers) as response:
                status = response.status
                if not HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
                    error = f"Wrong response from the webhook: {status} {response.reason}"
        except (aiohttp.ClientError, TimeoutError) as failure:
            error = f"Connection failed: {str(failure) or type(failure).__name__}"
        self.webhook_deliveries.append(WebhookDelivery(update["update_id"], url, status, error))
        return error

    def _delivery_url(self, hook: _Webhook) -> str:
        """The setWebhook URL, or its path at the next origin of :meth:`route_webhook_to`."""
        routes = self._webhook_routes
        if not routes:
            return hook.url
        origin = urlsplit(routes[self._webhook_turn % len(routes)])
        self._webhook_turn += 1
        target = urlsplit(hook.url)
        return urlunsplit((origin.scheme, origin.netloc, target.path, target.query, ""))

    async def _send_message(self, params: JsonDict) -> JsonDict:
        chat = self._writable_chat(params)
        formatted = format_message_text(params.get("text"), params.get("parse_mode"))
        markup = parse_reply_markup(params.get("reply_markup"), inline_only=False)
        if not isinstance(params.get("link_preview_options", {}), dict):
            raise bad_request("can't parse link_preview_options JSON object")
        thread_id = params.get("message_thread_id")
        if thread_id is not None and thread_id not in chat.topics:
            raise bad_request("message thread not found")
        reply_to = self._reply_target(chat, params)
        if thread_id is None and reply_to is not None:
            thread_id = chat.messages[reply_to].message_thread_id  # a reply joins its topic
        self._spend_rate_limit(chat)
        message = self._append_message(
            chat,
            self.bot_user,
            params["text"],
            formatted,
            reply_markup=markup,
            reply_to_message_id=reply_to,
            message_thread_id=thread_id,
        )
        return self._message_to_api(message)

    def _reply_target(self, chat: _Chat, params: JsonDict) -> int | None:
        """The message being replied to, from reply_parameters or the legacy flat parameters."""
        reply = params.get("reply_parameters")
        if reply is None:
            if params.get("reply_to_message_id") is None:
                return None
            reply = {
                "message_id": params["reply_to_message_id"],
                "allow_sending_without_reply": params.get("allow_sending_without_reply", False),
            }
        if not isinstance(reply, dict) or not isinstance(reply.get("message_id"), int):
            raise bad_request("can't parse reply_parameters JSON object")
        if reply.get("chat_id", chat.id) != chat.id:
            raise bad_request("replies to other chats are not modelled by the fake Bot API")
        if reply["message_id"] in chat.messages:
            return int(reply["message_id"])
        if reply.get("allow_sending_without_reply"):
            return None
        raise bad_request("message to be replied not found")

    def _editable_message(self, params: JsonDict) -> tuple[_Chat, FakeMessage]:
        if "inline_message_id" in params:
            raise bad_request("inline messages are not modelled by the fake Bot API")
        chat = self._writable_chat(params)
        message_id = params.get("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = chat.messages.get(message_id)
        if message is None:
            raise bad_request("message to edit not found")
        if not message.from_bot:
            raise bad_request("message can't be edited")
        return chat, message

    async def _edit_message_text(self, params: JsonDict) -> JsonDict:
        chat, message = self._editable_message(params)
        formatted = format_message_text(params.get("text"), params.get("parse_mode"))
        # Omitting reply_markup removes the keyboard: Telegram does not carry it over.
        markup = parse_reply_markup(params.get("reply_markup"), inline_only=True)
        return self._apply_edit(chat, message, params["text"], formatted, markup)

    async def _edit_message_reply_markup(self, params: JsonDict) -> JsonDict:
        chat, message = self._editable_message(params)
        markup = parse_reply_markup(params.get("reply_markup"), inline_only=True)
        formatted = FormattedText(message.plain_text, message.entities)
        return self._apply_edit(chat, message, message.text, formatted, markup)

    def _apply_edit(
        self,
        chat: _Chat,
        message: FakeMessage,
        source: str,
        formatted: FormattedText,
        markup: JsonDict | None,
    ) -> JsonDict:
        # Telegram compares what people would see, not the markup source: <b> vs <strong> is no
        # change.
        if (formatted.text, formatted.entities, markup) == (
            message.plain_text,
            message.entities,
            message.reply_markup,
        ):
            raise bad_request(NOT_MODIFIED)
        self._spend_rate_limit(chat)
        message.history.append(message.text)
        message.text = source
        message.plain_text, message.entities = formatted
        message.reply_markup = markup
        message.edit_date = int(time.time())
        self._touch()
        return self._message_to_api(message)

    async def _answer_callback_query(self, params: JsonDict) -> bool:
        query = self._callback_queries.get(params.get("callback_query_id") or "")
        if query is None or query.answer is not None:
            raise bad_request(QUERY_TOO_OLD)
        text = params.get("text")
        if text is not None and utf16_len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            raise bad_request("MESSAGE_TOO_LONG")
        query.answer = CallbackAnswer(
            text=text,
            show_alert=params.get("show_alert", False),
            cache_time=params.get("cache_time", 0),
        )
        self._touch()
        return True

    def _command_scope(self, params: JsonDict) -> tuple[str, str]:
        """Key for :attr:`commands`: ("default" | "chat:<id>" | "chat_member:<id>:<user>", lang)."""
        scope = params.get("scope") or {"type": "default"}
        if not isinstance(scope, dict):
            raise bad_request("can't parse BotCommandScope JSON object")
        kind = scope.get("type")
        if kind in _GLOBAL_SCOPES:
            key = str(kind)
        elif kind in ("chat", "chat_administrators"):
            key = f"{kind}:{self._resolve_chat(scope).id}"
        elif kind == "chat_member":
            chat = self._resolve_chat(scope)
            if not isinstance(scope.get("user_id"), int):
                raise bad_request("invalid user_id specified")
            key = f"chat_member:{chat.id}:{scope['user_id']}"
        else:
            raise bad_request("unsupported BotCommandScope type")
        language = params.get("language_code") or ""
        if language and not _LANGUAGE_CODE.fullmatch(language):
            raise bad_request("invalid language code specified")
        return key, language

    async def _set_my_commands(self, params: JsonDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or not all(isinstance(c, dict) for c in commands):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > MAX_COMMANDS:
            raise bad_request("BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not _COMMAND_NAME.fullmatch(str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._command_scope(params)
        if commands:
            self.commands[key] = [
                {"command": c["command"], "description": c["description"]} for c in commands
            ]
        else:
            self.commands.pop(key, None)
        self._touch()
        return True

    async def _get_my_commands(self, params: JsonDict) -> list[JsonDict]:
        return self.commands.get(self._command_scope(params), [])

    async def _delete_my_commands(self, params: JsonDict) -> bool:
        self.commands.pop(self._command_scope(params), None)
        self._touch()
        return True


def _update_type(update: JsonDict) -> str:
    return next(key for key in update if key != "update_id")
