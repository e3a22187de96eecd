"""After a burst of Bot API calls, opsgate keeps only a few idle connections open.

httpcore looks at every pooled connection each time a call starts or ends, so a pool left
holding a burst's hundred idle connections makes the next burst of answers seconds slow
(bench/RESULTS.md, "The pool"). The real PTB bot of build_telegram sends to the stand-in, and
the test counts this process's connections to it in the kernel's socket table.
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
KEEPALIVE = 4
BURST = 40
ESTABLISHED = "01"

App = Application[Any, Any, Any, Any, Any, Any]


def open_connections_to(port: int) -> int:
    """Established TCP connections whose far end is 127.0.0.1:``port`` (the clients' side)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        fake.add_chat(CHAT_ID)
        yield fake


async def burst(app: App, size: int) -> None:
    await asyncio.gather(*(app.bot.send_message(CHAT_ID, f"message {n}") for n in range(size)))


async def test_a_burst_leaves_only_the_configured_idle_connections(
    telegram: FakeTelegram,
) -> None:
    port = int(telegram.root_url.rsplit(":", 1)[1])
    # Every call of the burst is in flight at once: the stand-in answers none before all came.
    telegram.delay_answer("sendMessage", 0.5, count=BURST)
    app: App = build_telegram(
        Settings(
            telegram_token=telegram.token,  # type: ignore[arg-type]
            alert_chat_id=CHAT_ID,
            telegram_api_url=telegram.root_url,
            telegram_keepalive_connections=KEEPALIVE,
        )
    )
    async with app:
        await burst(app, BURST)
        assert len(telegram.messages(CHAT_ID)) == BURST
        assert open_connections_to(port) == KEEPALIVE

        # The kept ones serve the next calls; a burst still gets a connection per call.
        await burst(app, KEEPALIVE)
        assert open_connections_to(port) == KEEPALIVE
        telegram.delay_answer("sendMessage", 3.0, count=BURST)
        second = asyncio.create_task(burst(app, BURST))
        await telegram.wait_for(lambda: len(telegram.messages(CHAT_ID)) == 2 * BURST + KEEPALIVE)
        assert open_connections_to(port) == BURST
        await second
        assert open_connections_to(port) == KEEPALIVE
