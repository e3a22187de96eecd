"""Which failed Bot API calls may still have been carried out: decided by how far httpx got.

The exceptions are raised by PTB's own HTTPXRequest, over a transport that fails the way the
network does, so the test pins PTB's wrapping (TimedOut / NetworkError *from* the httpx error)
as well as the sender's reading of it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from telegram import Bot
from telegram.error import NetworkError, TimedOut
from telegram.request import HTTPXRequest

from opsgate.app import build_telegram
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

NOT_SENT = [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout]
MAYBE_SENT = [
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
]


class FailingNetwork(httpx.AsyncBaseTransport):
    """Every request fails with ``error``, or gets ``status`` back when no error is given."""

    def __init__(self, error: type[httpx.TransportError] | None, status: int = 200) -> None:
        self.error = error
        self.status = status
        self.methods: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.methods.append(request.url.path.rpartition("/")[2])
        if self.error is not None:
            raise self.error(f"{self.error.__name__} on the way", request=request)
        return httpx.Response(
            self.status,
            json={"ok": False, "error_code": self.status, "description": "Internal Server Error"},
        )


@pytest.fixture
async def chats(tmp_path: Path) -> AsyncIterator[ChatDirectory]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}")
    try:
        yield ChatDirectory(db)
    finally:
        await db.dispose()


async def sender_over(network: FailingNetwork, chats: ChatDirectory) -> TelegramSender:
    request = HTTPXRequest(httpx_kwargs={"transport": network})
    bot = Bot(TOKEN, base_url="http://bot-api.invalid/bot", request=request)
    return TelegramSender(bot, chats)


async def ptb_error(network: FailingNetwork) -> NetworkError:
    request = HTTPXRequest(httpx_kwargs={"transport": network})
    await request.initialize()
    try:
        await request.post(f"http://bot-api.invalid/bot{TOKEN}/sendMessage", None)
    except NetworkError as exc:
        return exc
    finally:
        await request.shutdown()
    raise AssertionError("the request did not fail")


@pytest.mark.parametrize("error", NOT_SENT + MAYBE_SENT)
async def test_ptb_wraps_the_httpx_error_as_its_cause(error: type[httpx.TransportError]) -> None:
    exc = await ptb_error(FailingNetwork(error))
    assert isinstance(exc.__cause__, error)
    assert isinstance(exc, TimedOut) == issubclass(error, httpx.TimeoutException)
    assert may_have_been_carried_out(exc) == (error in MAYBE_SENT)


async def test_an_error_status_is_an_answer() -> None:
    exc = await ptb_error(FailingNetwork(None, status=500))
    assert exc.__cause__ is None
    assert not may_have_been_carried_out(exc)


@pytest.mark.parametrize("error", MAYBE_SENT)
async def test_a_send_or_edit_that_may_have_landed_has_an_unknown_outcome(
    error: type[httpx.TransportError], chats: ChatDirectory
) -> None:
    sender = await sender_over(FailingNetwork(error), chats)
    with pytest.raises(ChatOutcomeUnknown, match=error.__name__):
        await sender.post_card(CHAT, CARD)
    with pytest.raises(ChatOutcomeUnknown):
        await sender.send_html(CHAT.chat_id, "result")
    with pytest.raises(ChatOutcomeUnknown):
        await sender.edit_card(MessageRef(CHAT.chat_id, 7), CARD)
    # Nothing is posted by a command list; its failure is plain unavailability.
    with pytest.raises(ChatUnavailable) as plain:
        await sender.set_commands([("help", "what opsgate can do")])
    assert not isinstance(plain.value, ChatOutcomeUnknown)


@pytest.mark.parametrize("error", NOT_SENT)
async def test_a_send_that_never_left_is_safe_to_repeat(
    error: type[httpx.TransportError], chats: ChatDirectory
) -> None:
    sender = await sender_over(FailingNetwork(error), chats)
    for call in (
        sender.post_card(CHAT, CARD),
        sender.edit_card(MessageRef(CHAT.chat_id, 7), CARD),
    ):
        with pytest.raises(ChatUnavailable) as failed:
            await call
        assert not isinstance(failed.value, ChatOutcomeUnknown)


async def test_a_server_error_answer_is_safe_to_repeat(chats: ChatDirectory) -> None:
    sender = await sender_over(FailingNetwork(None, status=500), chats)
    with pytest.raises(ChatUnavailable) as failed:
        await sender.post_card(CHAT, CARD)
    assert not isinstance(failed.value, ChatOutcomeUnknown)


async def test_answering_a_tap_never_raises_on_a_lost_answer(chats: ChatDirectory) -> None:
    network = FailingNetwork(httpx.ReadTimeout)
    sender = await sender_over(network, chats)
    # A tap near the end of its window: one retry at most, then the answer is given up.
    nearly_too_old = time.monotonic() - ANSWER_WINDOW_SECONDS + 0.5
    await sender.answer_callback("1", "Approved", alert=False, arrived=nearly_too_old)
    assert 1 <= network.methods.count("answerCallbackQuery") <= 2


def test_the_bot_waits_for_a_loaded_bot_api() -> None:
    def timeouts(**values: float) -> tuple[float | None, float | None]:
        settings = Settings(telegram_token=TOKEN, alert_chat_id=-1, **values)  # type: ignore[arg-type]
        request = build_telegram(settings).bot.request
        assert isinstance(request, HTTPXRequest)
        return request.read_timeout, request._client.timeout.connect

    assert timeouts() == (30.0, 10.0)
    assert timeouts(telegram_read_timeout=45, telegram_connect_timeout=3) == (45.0, 3.0)
