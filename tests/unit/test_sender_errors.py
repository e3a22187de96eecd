"""Which failed Bot API calls may still have been carried out: decided by how far the request got.

The failures are real ones on loopback (nothing listening, a full pool, a server that never
answers or hangs up), met by the bot's own request (bot_api_client.AiohttpRequest), so the tests
pin its wrapping (TimedOut / NetworkError *from* the aiohttp error) as well as the sender's
reading of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from telegram import Bot
from telegram.error import NetworkError, TimedOut

from opsgate.app import BOT_API_CONNECTIONS, build_telegram
from opsgate.bot.bot_api_client import AiohttpRequest
from opsgate.bot.callback_answers import ANSWER_WINDOW_SECONDS
from opsgate.bot.sender import TelegramSender, may_have_been_carried_out
from opsgate.services.chat import (
    CardView,
    ChatOutcomeUnknown,
    ChatTarget,
    ChatUnavailable,
    MessageRef,
)
from opsgate.services.chats import ChatDirectory
from opsgate.services.storage.db import Database
from opsgate.settings import Settings

TOKEN = "123456:TEST-TOKEN"
CHAT = ChatTarget(-1001234567890)
CARD = CardView(
    incident_id="INC-AAAA",
    incident_status="firing",
    severity="critical",
    alertname="CheckoutErrors",
    summary="",
    service="checkout",
    namespace="shop",
    firing_count=1,
    alert_count=1,
    labels={},
)
QUICK = 0.3
ERROR_BODY = b'{"ok": false, "error_code": 500, "description": "Internal Server Error"}'
SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(ERROR_BODY), ERROR_BODY)
)


@dataclass
class BotApi:
    """A loopback Bot API that fails as told: ``silent`` reads a request and never answers,
    ``hang_up`` reads it and closes the connection, ``error`` answers 500."""

    behaviour: str
    port: int = 0
    methods: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self._open:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, rest = head.decode("latin-1").partition("\r\n")
                self.methods.append(request_line.split()[1].rpartition("/")[2])
                length = next(
                    (
                        int(line.partition(":")[2])
                        for line in rest.split("\r\n")
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if self.behaviour == "hang_up":
                    break
                if self.behaviour == "error":
                    writer.write(SERVER_ERROR)
                    await writer.drain()
                    break
                await asyncio.Event().wait()  # silent
        writer.close()
        self._open.discard(writer)


def unused_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def chats(tmp_path: Path) -> AsyncIterator[ChatDirectory]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}")
    try:
        yield ChatDirectory(db)
    finally:
        await db.dispose()


@contextlib.asynccontextmanager
async def bot_api(behaviour: str) -> AsyncIterator[BotApi]:
    api = BotApi(behaviour)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


def request() -> AiohttpRequest:
    return AiohttpRequest(connections=4, read_timeout=QUICK, connect_timeout=QUICK)


async def failure(port: int, *, busy: bool = False) -> NetworkError:
    """How the bot's request fails against ``port``; ``busy``: with its only connection taken
    by a call that is never answered."""
    client = (
        AiohttpRequest(connections=1, read_timeout=30.0, connect_timeout=QUICK)
        if busy
        else request()
    )
    url = f"http://127.0.0.1:{port}/bot{TOKEN}/sendMessage"
    holder = asyncio.ensure_future(client.post(url, None)) if busy else None
    try:
        await asyncio.sleep(0.1)
        await client.post(url, None)
    except NetworkError as exc:
        return exc
    finally:
        if holder is not None:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError, NetworkError):
                await holder
        await client.shutdown()
    raise AssertionError("the request did not fail")


async def test_a_refused_connection_was_not_sent() -> None:
    exc = await failure(unused_port())
    assert isinstance(exc.__cause__, aiohttp.ClientConnectorError)
    assert not isinstance(exc, TimedOut)
    assert not may_have_been_carried_out(exc)


async def test_a_wait_for_a_free_connection_that_runs_out_was_not_sent() -> None:
    async with bot_api("silent") as api:
        exc = await failure(api.port, busy=True)
    assert isinstance(exc, TimedOut)
    assert isinstance(exc.__cause__, aiohttp.ConnectionTimeoutError)
    assert not may_have_been_carried_out(exc)
    assert api.methods == ["sendMessage"], "only the call holding the connection arrived"


async def test_an_unanswered_request_may_have_been_carried_out() -> None:
    async with bot_api("silent") as api:
        exc = await failure(api.port)
    assert isinstance(exc, TimedOut)
    assert isinstance(exc.__cause__, aiohttp.ServerTimeoutError)
    assert may_have_been_carried_out(exc)


async def test_a_hang_up_after_the_request_may_have_been_carried_out() -> None:
    async with bot_api("hang_up") as api:
        exc = await failure(api.port)
    assert not isinstance(exc, TimedOut)
    assert isinstance(exc.__cause__, aiohttp.ClientError)
    assert may_have_been_carried_out(exc)


async def test_an_error_status_is_an_answer() -> None:
    async with bot_api("error") as api:
        exc = await failure(api.port)
    assert exc.__cause__ is None
    assert not may_have_been_carried_out(exc)


@contextlib.asynccontextmanager
async def sender_at(port: int, chats: ChatDirectory) -> AsyncIterator[TelegramSender]:
    client = request()
    sender = TelegramSender(
        Bot(TOKEN, base_url=f"http://127.0.0.1:{port}/bot", request=client), chats
    )
    try:
        yield sender
    finally:
        await client.shutdown()


Call = Callable[[TelegramSender], Awaitable[object]]
CHANGES: list[Call] = [
    lambda s: s.post_card(CHAT, CARD),
    lambda s: s.send_html(CHAT.chat_id, "result"),
    lambda s: s.edit_card(MessageRef(CHAT.chat_id, 7), CARD),
]


@pytest.mark.parametrize("behaviour", ["silent", "hang_up"])
async def test_a_send_or_edit_that_may_have_landed_has_an_unknown_outcome(
    behaviour: str, chats: ChatDirectory
) -> None:
    async with bot_api(behaviour) as api, sender_at(api.port, chats) as sender:
        for call in CHANGES:
            with pytest.raises(ChatOutcomeUnknown, match="aiohttp"):
                await call(sender)
        # Nothing is posted by a command list; its failure is plain unavailability.
        with pytest.raises(ChatUnavailable) as plain:
            await sender.set_commands([("help", "what opsgate can do")])
        assert not isinstance(plain.value, ChatOutcomeUnknown)


async def test_a_send_that_never_left_is_safe_to_repeat(chats: ChatDirectory) -> None:
    async with sender_at(unused_port(), chats) as sender:
        for call in CHANGES:
            with pytest.raises(ChatUnavailable) as failed:
                await call(sender)
            assert not isinstance(failed.value, ChatOutcomeUnknown)


async def test_a_server_error_answer_is_safe_to_repeat(chats: ChatDirectory) -> None:
    async with bot_api("error") as api, sender_at(api.port, chats) as sender:
        with pytest.raises(ChatUnavailable) as failed:
            await sender.post_card(CHAT, CARD)
        assert not isinstance(failed.value, ChatOutcomeUnknown)


async def test_answering_a_tap_never_raises_on_a_lost_answer(chats: ChatDirectory) -> None:
    async with bot_api("silent") as api, sender_at(api.port, chats) as sender:
        # A tap near the end of its window: one retry at most, then the answer is given up.
        nearly_too_old = time.monotonic() - ANSWER_WINDOW_SECONDS + 0.5
        await sender.answer_callback("1", "Approved", alert=False, arrived=nearly_too_old)
    assert 1 <= api.methods.count("answerCallbackQuery") <= 2


def test_the_bot_waits_for_a_loaded_bot_api() -> None:
    def timeouts(**values: float) -> tuple[float, float, int]:
        settings = Settings(telegram_token=TOKEN, alert_chat_id=-1, **values)  # type: ignore[arg-type]
        client = build_telegram(settings).bot.request
        assert isinstance(client, AiohttpRequest)
        return client.read_timeout, client.connect_timeout, client.connections

    assert timeouts() == (30.0, 10.0, BOT_API_CONNECTIONS)
    assert timeouts(telegram_read_timeout=45, telegram_connect_timeout=3) == (45.0, 3.0, 256)
