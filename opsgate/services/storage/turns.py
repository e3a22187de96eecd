"""Callers that take turns: while one works for everyone in line, the others wait in it.

The shape of the group commit (write_batches.py) and of the batched reads (read_batches.py):
there is no worker task. A caller that finds nobody working works at once; whoever comes
meanwhile waits in line, and when the work ends the first caller still waiting works next,
for the whole line. Every piece of work belongs to a caller that awaits it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Lead:
    """The answer that tells a waiting caller to work for the line itself."""


LEAD = Lead()


@dataclass(eq=False)
class Waiter(Generic[T, R]):
    item: T
    answer: asyncio.Future[R | Lead] = field(repr=False)


class Turns(Generic[T, R]):
    """The line; ``busy`` while a caller works for it."""

    def __init__(self) -> None:
        self.line: list[Waiter[T, R]] = []
        self.busy = False

    async def wait(self, item: T) -> R | Lead:
        """``item``'s answer, when the work of another caller gave it; else ``LEAD``: the
        caller works now (``busy`` is set; it takes its batch from ``line``, where its own
        waiter is first, and calls ``hand_on`` when done)."""
        waiter: Waiter[T, R] = Waiter(item, asyncio.get_running_loop().create_future())
        self.line.append(waiter)
        if self.busy:
            try:
                answer = await waiter.answer
            except asyncio.CancelledError:
                if waiter.answer.done() and not waiter.answer.cancelled():
                    # Told to lead just as it was cancelled: the line must not stall.
                    self.hand_on()
                raise
            if not isinstance(answer, Lead):
                return answer
        self.busy = True
        return LEAD

    def hand_on(self) -> None:
        """The first caller still waiting works next; with none, nobody works."""
        while self.line:
            head = self.line[0]
            if not head.answer.done():
                head.answer.set_result(LEAD)
                return
            # Cancelled while waiting: nobody is left to be answered.
            self.line.pop(0)
        self.busy = False
