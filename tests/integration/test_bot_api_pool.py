"""A burst of Bot API calls opens a connection per call in flight, and the next burst reuses them.

The real PTB bot of build_telegram (its calls on bot_api_client.AiohttpRequest) sends to the
stand-in, and the test reads this process's connections to it from the kernel's socket table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application

from opsgate.app import build_telegram
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.settings import Settings

CHAT_ID = -1001234567890
BURST = 40
ESTABLISHED = "01"

App = Application[Any, Any, Any, Any, Any, Any]


def open_connections_to(port: int) -> set[int]:
    """The local ports of established TCP connections whose far end is 127.0.0.1:``port``."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        fake.add_chat(CHAT_ID)
        yield fake


async def burst(app: App, size: int) -> None:
    await asyncio.gather(*(app.bot.send_message(CHAT_ID, f"message {n}") for n in range(size)))


async def test_a_burst_reuses_the_connections_of_the_one_before(telegram: FakeTelegram) -> None:
    port = int(telegram.root_url.rsplit(":", 1)[1])
    # Every call of a burst is in flight at once: the stand-in answers none before all came.
    telegram.delay_answer("sendMessage", 0.5, count=2 * BURST)
    app: App = build_telegram(
        Settings(
            telegram_token=telegram.token,  # type: ignore[arg-type]
            alert_chat_id=CHAT_ID,
            telegram_api_url=telegram.root_url,
        )
    )
    async with app:
        await burst(app, BURST)
        assert len(telegram.messages(CHAT_ID)) == BURST
        first = open_connections_to(port)
        assert len(first) == BURST
        await burst(app, BURST)
        assert len(telegram.messages(CHAT_ID)) == 2 * BURST
        assert open_connections_to(port) == first, "the second burst set up connections anew"
    assert open_connections_to(port) == set()
