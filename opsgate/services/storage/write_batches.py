"""Group commit: writes that arrive while a transaction is in flight share the next one.

Each commit costs a round of driver hand-offs and, on SQLite, an fsync of the WAL under the
database's write lock. Concurrent callers that each committed alone would queue on that lock
one by one; here they queue in memory instead, and the next transaction writes all of them.

There is no writer task: the caller that finds nothing in flight writes, alone. Whoever
arrives meanwhile waits in line; when the transaction ends, the first caller still waiting
writes the whole line in one transaction, and so on. A caller is answered only after the
transaction holding its write committed, and nothing is lost with a task that nobody awaits:
every write in line belongs to a caller still waiting for it.

If a shared transaction fails, each of its writes is tried again alone, so one write the
database refuses fails only its own caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.storage.db import Database, describe_database_error
from opsgate.services.storage.turns import Lead, Turns, Waiter

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Enough to drain a full Alertmanager burst in a few commits, small enough that one
# transaction's locks are not held for long.
MAX_BATCH = 64


class WriteInterrupted(Exception):
    """The transaction carrying this write was cancelled: it may or may not have committed."""


class WriteBatches(Generic[T, R]):
    """``submit(item)`` writes ``item`` with ``write_all``, in one transaction with whatever
    other items are waiting; ``write_alone`` writes one item in its own transaction, for the
    retry after a shared transaction failed."""

    def __init__(
        self,
        db: Database,
        write_all: Callable[[AsyncSession, Sequence[T]], Awaitable[list[R]]],
        write_alone: Callable[[T], Awaitable[R]],
        *,
        max_batch: int = MAX_BATCH,
        name: str = "writes",
    ) -> None:
        self._db = db
        self._write_all = write_all
        self._write_alone = write_alone
        self._max_batch = max_batch
        self._name = name
        self._turns: Turns[T, R] = Turns()
        # Figures for the bench and tests: transactions, and the items they carried.
        self.batches = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        """Writes in line for the next transaction."""
        return len(self._turns.line)

    @property
    def writing(self) -> bool:
        """Whether a transaction of these writes is in flight."""
        return self._turns.busy

    async def submit(self, item: T) -> R:
        answer = await self._turns.wait(item)
        if not isinstance(answer, Lead):
            return answer
        line = self._turns.line
        batch = line[: self._max_batch]
        del line[: self._max_batch]
        try:
            outcomes = await self._write(batch)
        except BaseException:
            for other in batch[1:]:
                if not other.answer.done():
                    other.answer.set_exception(WriteInterrupted(self._name))
            raise
        finally:
            self._turns.hand_on()
        for other, outcome in zip(batch[1:], outcomes[1:], strict=True):
            if other.answer.done():
                continue  # its caller gave up; the write stands
            if isinstance(outcome, BaseException):
                other.answer.set_exception(outcome)
            else:
                other.answer.set_result(outcome)
        mine = outcomes[0]
        if isinstance(mine, BaseException):
            raise mine
        return mine

    async def _write(self, batch: list[Waiter[T, R]]) -> list[R | Exception]:
        items = [waiter.item for waiter in batch]
        try:
            async with self._db.transaction() as session:
                results: list[R | Exception] = list(await self._write_all(session, items))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning(
                "write_batch_failed",
                batch=self._name,
                size=len(items),
                error=describe_database_error(exc),
            )
            return [await self._alone(item) for item in items]
        self.batches += 1
        self.items += len(items)
        return results

    async def _alone(self, item: T) -> R | Exception:
        try:
            return await self._write_alone(item)
        except Exception as exc:
            return exc
