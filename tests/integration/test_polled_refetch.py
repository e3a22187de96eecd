"""A burst over one batch (commands, then a hundred taps): the taps behind a full batch are
fetched at once, and the held votes in it are neither confirmed nor parsed again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from telegram import Update
from telegram.request import HTTPXRequest

from opsgate.bot.callback_data import CardAction, encode
from opsgate.bot.polled_updates import (
    BATCH_LIMIT,
    ConfirmingBot,
    FreshUpdatesRequest,
    UpdateReceipts,
)
from opsgate.sandbox.telegram_api import FakeTelegram

GROUP = -1001234567890
COMMANDS = 5


@pytest_asyncio.fixture
async def burst() -> AsyncIterator[tuple[ConfirmingBot, UpdateReceipts]]:
    async with FakeTelegram() as telegram:
        telegram.add_chat(GROUP, type="supergroup")
        alice = telegram.user(1, "alice")
        card = telegram.send_text(GROUP, alice, "a card")
        # Its post is no update (privacy mode): the commands are.
        for _ in range(COMMANDS):
            telegram.send_text(GROUP, alice, "/timeline INC-1")
        vote = encode(CardAction(True, "ap1"))
        for n in range(BATCH_LIMIT):
            telegram.tap_stale(GROUP, card.message_id, telegram.user(100 + n, f"u{n}"), vote)
        receipts = UpdateReceipts(patience=30)
        bot = ConfirmingBot(
            telegram.token,
            base_url=f"{telegram.root_url}/bot",
            request=HTTPXRequest(),
            get_updates_request=FreshUpdatesRequest(connect_timeout=5),
            receipts=receipts,
        )
        async with bot:
            yield bot, receipts


async def test_taps_behind_a_full_batch_come_at_once_without_the_held_ones_parsed_again(
    burst: tuple[ConfirmingBot, UpdateReceipts], monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, receipts = burst
    first = await bot.get_updates(timeout=5)
    held = BATCH_LIMIT - COMMANDS
    assert len(first) == BATCH_LIMIT and receipts.count == held
    parsed: list[int] = []
    de_list = Update.de_list

    def counting(data: list[dict[str, object]], bot_: object) -> tuple[Update, ...]:
        parsed.append(len(data))
        return de_list(data, bot_)  # type: ignore[arg-type]

    monkeypatch.setattr(Update, "de_list", counting)
    # As PTB's updater asks next: past the last update it was given. No vote is released,
    # so an ordinary fetch would wait for them; this one must not.
    rest = await asyncio.wait_for(bot.get_updates(offset=first[-1].update_id + 1, timeout=5), 5)
    assert [u.update_id for u in rest] == [first[-1].update_id + n for n in range(1, 6)]
    assert parsed == [COMMANDS]
    assert receipts.count == BATCH_LIMIT
    # Nothing held was confirmed: Telegram still has every tap of the burst.
    monkeypatch.setattr(Update, "de_list", de_list)
    for update in first + rest:
        receipts.release(update.update_id)
    again = await bot.get_updates(offset=first[COMMANDS].update_id, timeout=0)
    assert [u.update_id for u in again] == [u.update_id for u in (first + rest)[COMMANDS:]]
