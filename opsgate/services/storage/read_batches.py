"""Batched reads: lookups that arrive while a read is in flight share the next one.

Every read is a round trip to the database and, on SQLite, hand-offs to the connection's
thread and back; under a burst of webhooks most of a re-send's cost is that trip, not the
query. Here a lookup that finds nothing in flight reads at once, alone; lookups that arrive
meanwhile wait in line, and when the read ends the first of them reads for the whole line in
one statement. Each lookup's read starts after the lookup arrived, so it sees every commit
that finished before then, as a read of its own would: nothing is remembered between reads,
and what another replica wrote is never hidden.

There is no reader task: every read belongs to a caller that awaits it (see turns.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from opsgate.services.storage.turns import Lead, Turns, Waiter

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# One statement's worth of keys; more wait for the next read.
MAX_KEYS = 64


class ReadBatches(Generic[K, V]):
    """``get(key)``: the value ``read_many`` finds for ``key`` (None if none), read together
    with the keys of whoever else is waiting."""

    def __init__(
        self,
        read_many: Callable[[Sequence[K]], Awaitable[dict[K, V]]],
        *,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._read_many = read_many
        self._max_keys = max_keys
        self._turns: Turns[K, V | None] = Turns()
        # Figures for the bench and tests: statements sent, and the lookups they answered.
        self.reads = 0
        self.lookups = 0

    async def get(self, key: K) -> V | None:
        answer = await self._turns.wait(key)
        if not isinstance(answer, Lead):
            return answer
        batch = self._take()
        try:
            found = await self._read_many(list(dict.fromkeys(w.item for w in batch)))
        except asyncio.CancelledError:
            # This caller is gone; the others were not answered and read again.
            self._turns.line[:0] = [other for other in batch[1:] if not other.answer.done()]
            raise
        except Exception as exc:
            for other in batch[1:]:
                if not other.answer.done():
                    other.answer.set_exception(exc)
            raise
        finally:
            self._turns.hand_on()
        self.reads += 1
        self.lookups += len(batch)
        for other in batch[1:]:
            if not other.answer.done():
                other.answer.set_result(found.get(other.item))
        return found.get(key)

    def _take(self) -> list[Waiter[K, V | None]]:
        """The line's first ``max_keys`` distinct keys' waiters, this caller's first."""
        keys: set[K] = set()
        batch: list[Waiter[K, V | None]] = []
        rest: list[Waiter[K, V | None]] = []
        for waiter in self._turns.line:
            if waiter.item in keys or len(keys) < self._max_keys:
                keys.add(waiter.item)
                batch.append(waiter)
            else:
                rest.append(waiter)
        self._turns.line = rest
        return batch
