"""One leader among replicas: whoever holds a process lock does the work only one may do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from opsgate.services.process_locks import LockUnavailable, ProcessLock

log = structlog.get_logger(__name__)


class Leadership:
    """Tries for the lock every ``interval`` seconds; while leader, checks it is still held.

    ``on_elected`` runs once the lock is taken, ``on_deposed`` once it is lost or on stop; the
    lock is released only after ``on_deposed`` has returned, so the next leader never starts
    while this one is still at work. An error from a callback ends ``run`` (the lock released):
    a leader that cannot do its job should make way, not hold on.
    """

    def __init__(
        self,
        lock: ProcessLock,
        *,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        interval: float,
    ) -> None:
        self._lock = lock
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._interval = interval
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval)
        finally:
            if self._leader:
                log.info("leader_stepped_down", lock=self._lock.name)
                await self._depose()

    async def _step(self) -> None:
        if not self._leader:
            try:
                won = await self._lock.try_acquire()
            except LockUnavailable as exc:
                log.warning("leader_election_failed", lock=self._lock.name, error=str(exc))
                return
            if won:
                # Leader before the callback, so a callback that fails half-way is undone too.
                self._leader = True
                log.info("leader_elected", lock=self._lock.name)
                await self._on_elected()
        elif not await self._lock.still_held():
            log.warning("leader_lost", lock=self._lock.name)
            await self._depose()

    async def _depose(self) -> None:
        self._leader = False
        try:
            await self._on_deposed()
        finally:
            await self._lock.release()
