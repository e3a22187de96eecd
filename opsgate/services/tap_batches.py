"""Concurrent taps on one card, decided together in one transaction.

A burst of taps on one card is decided one after another anyway (the approval's row lock), so
a transaction each is a queue of commits, each with its own lock wait and, on SQLite, its own
fsync. Taps that arrive while the card's previous transaction runs wait here instead and then
go in one transaction, in arrival order, each judged on what the ones before it left: every
answer still says what was committed, because no tap's answer is given before the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.storage.db import Database

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchInterrupted(Exception):
    """The batch holding this item stopped before deciding it (its task was cancelled)."""


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    result: asyncio.Future[R]


@dataclass
class _Key(Generic[T, R]):
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: list[_Waiting[T, R]] = field(default_factory=list)
    # Callers between arriving and leaving; the entry goes when the last one leaves.
    callers: int = 0


class KeyedBatches(Generic[T, R]):
    """Run ``decide_one`` for items of one key together, in one transaction per batch."""

    def __init__(self, db: Database, decide_one: Callable[[AsyncSession, T], Awaitable[R]]) -> None:
        self._db = db
        self._decide_one = decide_one
        self._keys: dict[str, _Key[T, R]] = {}

    async def submit(self, key: str, item: T) -> R:
        entry = self._keys.setdefault(key, _Key())
        waiting: _Waiting[T, R] = _Waiting(item, asyncio.get_running_loop().create_future())
        entry.waiting.append(waiting)
        entry.callers += 1
        try:
            async with entry.lock:
                # An earlier holder of the lock may have taken this item into its batch.
                if not waiting.result.done():
                    batch, entry.waiting = entry.waiting, []
                    await self._run(key, batch)
            return await waiting.result
        finally:
            entry.callers -= 1
            if entry.callers == 0:
                del self._keys[key]

    async def _run(self, key: str, batch: list[_Waiting[T, R]]) -> None:
        try:
            await self._decide(key, batch)
        finally:
            # Cancelled while deciding: nothing of the rest was committed, and its callers
            # must not wait for ever.
            for waiting in batch:
                if not waiting.result.done():
                    waiting.result.set_exception(BatchInterrupted(key))

    async def _decide(self, key: str, batch: list[_Waiting[T, R]]) -> None:
        try:
            results = await self._together(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].result.set_exception(exc)
                return
            # One item may be what failed the batch; alone, only it fails.
            log.warning("tap_batch_failed", key=key, size=len(batch), error=repr(exc))
            for waiting in batch:
                await self._alone(waiting)
            return
        for waiting, result in zip(batch, results, strict=True):
            waiting.result.set_result(result)

    async def _together(self, batch: list[_Waiting[T, R]]) -> list[R]:
        async with self._db.transaction() as session:
            return [await self._decide_one(session, waiting.item) for waiting in batch]

    async def _alone(self, waiting: _Waiting[T, R]) -> None:
        try:
            async with self._db.transaction() as session:
                result = await self._decide_one(session, waiting.item)
        except Exception as exc:
            waiting.result.set_exception(exc)
        else:
            waiting.result.set_result(result)
