"""Polled votes confirmed to Telegram only once they are durable.

Telegram drops an update once ``getUpdates`` is called with a higher offset, and PTB's updater
makes that call as soon as it has queued a batch. A tap is answered before its vote is written
(``CardButtons``), so a crash in between would lose a vote whose tapper was told it arrived.
``ConfirmingBot`` holds each Approve / Reject tap it fetches and makes no ``getUpdates`` whose
offset would confirm it until the tap's handler has released it; Telegram then sends the taps
of a killed process again to the next one. After a full batch, the updates waiting behind it
(a burst over one batch's 100) are fetched at once, with an offset that confirms nothing held;
otherwise the next long poll waits as long as the held votes take to commit, tens of
milliseconds. A handler that never releases its tap
holds confirming for at most ``patience`` seconds (``update_receipt_overdue``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from telegram import Update
from telegram.ext import ExtBot

from opsgate.bot.callback_data import CardAction, decode

log = structlog.get_logger(__name__)

# A vote not durable within Telegram's answer window waits on a stuck database: polling goes on.
PATIENCE_SECONDS = 15.0
# The most updates one getUpdates gives (PTB asks for Telegram's default, its maximum).
BATCH_LIMIT = 100


class UpdateReceipts:
    """The polled updates still being made durable, by update id."""

    def __init__(self, *, patience: float = PATIENCE_SECONDS) -> None:
        self._patience = patience
        self._held: set[int] = set()
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def hold(self, updates: Sequence[Update]) -> None:
        """Holds the votes among ``updates``; nothing else needs to be durable first."""
        for update in updates:
            query = update.callback_query
            if query is not None and isinstance(decode(query.data), CardAction):
                self._held.add(update.update_id)
        if self._held:
            self._settled.clear()

    def lowest(self) -> int | None:
        return min(self._held, default=None)

    def release(self, update_id: int) -> None:
        self._held.discard(update_id)
        if not self._held:
            self._settled.set()

    def forget(self) -> None:
        """Polling stopped: what it fetched last and PTB never handed on is sent again."""
        self._held.clear()
        self._settled.set()

    async def settled(self) -> None:
        """Returns once every held update was released, or ``patience`` seconds have passed."""
        try:
            await asyncio.wait_for(self._settled.wait(), self._patience)
        except TimeoutError:
            log.warning("update_receipt_overdue", update_ids=sorted(self._held))
            self.forget()


class ConfirmingBot(ExtBot[None]):
    """PTB's bot, whose ``getUpdates`` waits until the votes it fetched before are durable."""

    __slots__ = ("_more_waiting", "_receipts")

    def __init__(self, *args: Any, receipts: UpdateReceipts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receipts = receipts
        # The last batch was as long as Telegram gives: more may be waiting behind it.
        self._more_waiting = False

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        offset = kwargs.get("offset")
        lowest = self._receipts.lowest()
        room = len(self._receipts.held) < BATCH_LIMIT
        if self._more_waiting and room and lowest is not None and offset is not None:
            # Telegram keeps every update from the lowest held one on: ask from there without
            # waiting, so that what came after the last batch (a burst over one batch's 100)
            # is handed on now, while the held votes stay unconfirmed. Batches come in order,
            # so the lowest held one is below ``offset``.
            again = await super().get_updates(*args, **{**kwargs, "offset": lowest, "timeout": 0})
            fresh = tuple(u for u in again if u.update_id >= offset)
            self._more_waiting = len(again) >= BATCH_LIMIT
            if fresh:
                self._receipts.hold(fresh)
                return fresh
        await self._receipts.settled()
        updates = await super().get_updates(*args, **kwargs)
        self._more_waiting = len(updates) >= BATCH_LIMIT
        self._receipts.hold(updates)
        return updates
