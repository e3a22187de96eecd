"""Batched reads: lookups that arrive while a read is in flight share the next one.

Every read is a round trip to the database and, on SQLite, hand-offs to the connection's
thread and back; under a burst of webhooks most of a re-send's cost is that trip, not the
query. Here a lookup that finds nothing in flight reads at once, alone; lookups that arrive
meanwhile wait in line, and when the read ends the first of them reads for the whole line in
one statement. Each lookup's read starts after the lookup arrived, so it sees every commit
that finished before then, as a read of its own would: nothing is remembered between reads,
and what another replica wrote is never hidden.

There is no reader task: every read belongs to a caller that awaits it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# One statement's worth of keys; more wait for the next read.
MAX_KEYS = 64


class _Lead:
    """The answer that tells a waiting caller to read for the line itself."""


_LEAD = _Lead()


@dataclass(eq=False)
class _Waiter(Generic[K, V]):
    key: K
    answer: asyncio.Future[V | _Lead | None] = field(repr=False)


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
        self._line: list[_Waiter[K, V]] = []
        self._reading = False
        # Figures for the bench and tests: statements sent, and the lookups they answered.
        self.reads = 0
        self.lookups = 0

    async def get(self, key: K) -> V | None:
        waiter: _Waiter[K, V] = _Waiter(key, asyncio.get_running_loop().create_future())
        self._line.append(waiter)
        if self._reading:
            try:
                answer = await waiter.answer
            except asyncio.CancelledError:
                if waiter.answer.done() and not waiter.answer.cancelled():
                    # Told to lead just as it was cancelled: the line must not stall.
                    self._hand_on()
                raise
            if not isinstance(answer, _Lead):
                return answer
        self._reading = True
        batch = self._take()
        try:
            found = await self._read_many(list(dict.fromkeys(w.key for w in batch)))
        except asyncio.CancelledError:
            # This caller is gone; the others were not answered and read again.
            self._line[:0] = [other for other in batch[1:] if not other.answer.done()]
            raise
        except Exception as exc:
            for other in batch[1:]:
                if not other.answer.done():
                    other.answer.set_exception(exc)
            raise
        finally:
            self._hand_on()
        self.reads += 1
        self.lookups += len(batch)
        for other in batch[1:]:
            if not other.answer.done():
                other.answer.set_result(found.get(other.key))
        return found.get(key)

    def _take(self) -> list[_Waiter[K, V]]:
        """The line's first ``max_keys`` distinct keys' waiters, this caller's first."""
        keys: set[K] = set()
        batch: list[_Waiter[K, V]] = []
        rest: list[_Waiter[K, V]] = []
        for waiter in self._line:
            if waiter.key in keys or len(keys) < self._max_keys:
                keys.add(waiter.key)
                batch.append(waiter)
            else:
                rest.append(waiter)
        self._line = rest
        return batch

    def _hand_on(self) -> None:
        """The first caller still waiting reads the line next; with none, nobody reads."""
        while self._line:
            head = self._line[0]
            if not head.answer.done():
                head.answer.set_result(_LEAD)
                return
            # Cancelled while waiting: nobody is left to be answered.
            self._line.pop(0)
        self._reading = False
