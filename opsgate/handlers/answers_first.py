"""A burst's taps are all answered before any of their votes is written.

An answer is a few milliseconds of work and Telegram's spinner waits for it; a vote's write
transaction costs more and nobody watches it. Writes that run while answers are still going out
share the event loop with them and push the last answer of a burst back by the whole burst's
writing, so a vote waits until no tap is being answered, for at most ``patience`` seconds so
that a steady stream of taps cannot hold the votes back for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

PATIENCE_SECONDS = 1.0


class AnswersFirst:
    def __init__(self, *, patience: float = PATIENCE_SECONDS) -> None:
        self._patience = patience
        self._answering = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextlib.asynccontextmanager
    async def answering(self) -> AsyncIterator[None]:
        self._answering += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._answering -= 1
            if self._answering == 0:
                self._quiet.set()

    async def after_answers(self) -> None:
        """For work that is not a vote but need not go before a burst's answers either (a
        command's reads and rendering): one turn of the loop first, so that the taps fetched
        in the same batch have begun to be answered, then as :meth:`quiet`."""
        await asyncio.sleep(0)
        await self.quiet()

    async def quiet(self) -> None:
        if self._answering == 0:
            return
        # A timeout scope, not wait_for: a burst's hundred waiters need no task each.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._patience):
                await self._quiet.wait()
