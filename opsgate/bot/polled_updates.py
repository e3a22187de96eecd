"""Polled votes confirmed to Telegram only once they are durable.

Telegram drops an update once ``getUpdates`` is called with a higher offset, and PTB's updater
makes that call as soon as it has queued a batch. A tap is answered before its vote is written
(``CardButtons``), so a crash in between would lose a vote whose tapper was told it arrived.
``ConfirmingBot`` holds each Approve / Reject tap it fetches and makes no ``getUpdates`` whose
offset would confirm it until the tap's handler has released it; Telegram then sends the taps
of a killed process again to the next one. After a full batch, the updates waiting behind it
(a burst over one batch's 100) are fetched at once, with an offset that confirms nothing held;
otherwise the next long poll waits as long as the held votes take to commit, tens of
milliseconds. A handler that never releases its tap holds confirming for at most ``patience``
seconds (``update_receipt_overdue``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import structlog
from telegram import Update
from telegram.ext import ExtBot
from telegram.request import BaseRequest

from opsgate.bot.bot_api_client import AiohttpRequest
from opsgate.bot.callback_data import CardAction, decode

log = structlog.get_logger(__name__)

# A vote not durable within Telegram's answer window waits on a stuck database: polling goes on.
PATIENCE_SECONDS = 15.0
# The most updates one getUpdates gives (PTB asks for Telegram's default, its maximum).
BATCH_LIMIT = 100
# How long past its long-poll timeout a getUpdates answer may take: PTB's own client's default.
LONG_POLL_READ_MARGIN_SECONDS = 5.0


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

    @property
    def count(self) -> int:
        return len(self._held)

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
            async with asyncio.timeout(self._patience):
                await self._settled.wait()
        except TimeoutError:
            log.warning("update_receipt_overdue", update_ids=sorted(self._held))
            self.forget()


class FreshUpdatesRequest(AiohttpRequest):
    """``getUpdates``' HTTP client, which drops the updates below ``floor`` before PTB parses
    them: a fetch from the lowest held vote gets the held ones again, and turning a batch of
    them back into objects costs a burst's answers about 0.1 ms each.

    It runs on aiohttp like the bot's other calls, on a pool of its own (one long poll at a
    time): on httpx's transport, the one connection it kept open cost about 5 MB of resident
    memory that nothing else needed (bench/RESULTS.md)."""

    __slots__ = ("fetched", "floor")

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float = LONG_POLL_READ_MARGIN_SECONDS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            connections=1, read_timeout=read_timeout, connect_timeout=connect_timeout, tls=tls
        )
        self.floor: int | None = None
        # How many updates the last answer held, the dropped ones included.
        self.fetched = 0

    # A static method in PTB's base class, called on the instance: the floor is the instance's.
    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        data = super().parse_json_payload(payload)
        result = data.get("result")
        if isinstance(result, list):
            self.fetched = len(result)
            if self.floor is not None:
                data["result"] = [u for u in result if _update_id(u, self.floor) >= self.floor]
        return data


def _update_id(update: object, default: int) -> int:
    if isinstance(update, dict) and isinstance(update.get("update_id"), int):
        return int(update["update_id"])
    return default


class ConfirmingBot(ExtBot[None]):
    """PTB's bot, whose ``getUpdates`` waits until the votes it fetched before are durable."""

    __slots__ = ("_fetching", "_more_waiting", "_receipts")

    def __init__(
        self,
        token: str,
        *,
        base_url: str,
        request: BaseRequest,
        get_updates_request: FreshUpdatesRequest,
        receipts: UpdateReceipts,
    ) -> None:
        super().__init__(
            token, base_url=base_url, request=request, get_updates_request=get_updates_request
        )
        self._receipts = receipts
        self._fetching = get_updates_request
        # The last batch was as long as Telegram gives: more may be waiting behind it.
        self._more_waiting = False

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        offset = kwargs.get("offset")
        lowest = self._receipts.lowest()
        room = self._receipts.count < BATCH_LIMIT
        if self._more_waiting and room and lowest is not None and offset is not None:
            # Telegram keeps every update from the lowest held one on: ask from there without
            # waiting, so that what came after the last batch (a burst over one batch's 100)
            # is handed on now, while the held votes stay unconfirmed. Batches come in order,
            # so the lowest held one is below ``offset``.
            self._fetching.floor = offset
            try:
                fresh = await super().get_updates(
                    *args, **{**kwargs, "offset": lowest, "timeout": 0}
                )
            finally:
                self._fetching.floor = None
            self._more_waiting = self._fetching.fetched >= BATCH_LIMIT
            if fresh:
                self._receipts.hold(fresh)
                return fresh
        await self._receipts.settled()
        updates = await super().get_updates(*args, **kwargs)
        self._more_waiting = len(updates) >= BATCH_LIMIT
        self._receipts.hold(updates)
        return updates
