"""The outbound scheduler: every send and edit waits here for its chat's turn.

Per chat one call is in flight at a time and the next one goes once the chat's budgets
(:class:`~opsgate.bot.send_budget.SendBudget`) allow it, the most urgent first. A 429 pauses
only the chat it names. Callback answers never pass here: a spinner stops at once, whatever the
message budget says.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, TypeVar, cast

import structlog

from opsgate.bot.send_budget import SendBudget
from opsgate.services.chat import ChatRetryLater, ChatUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A 429 asking for longer than this is handed to the caller (a job is rescheduled for then)
# rather than waited out while holding the caller.
MAX_PAUSE_SECONDS = 15.0
# How often one call is tried again after a 429 before its caller hears of it.
MAX_RETRIES = 2


class Priority(IntEnum):
    """Which waiting call of a chat goes first: the lowest value. Callback answers come before
    all of these; they bypass the scheduler."""

    COMMAND_ANSWER = 1
    RESULT_REPLY = 2
    CARD_EDIT = 3
    NEW_CARD = 4
    FANOUT_COPY = 5


class _Grant(Enum):
    GO = "go"
    SUPERSEDED = "superseded"  # a newer edit of the same message carries the latest content


@dataclass(order=True)
class _Ticket:
    priority: int
    seq: int
    message_id: int | None = field(compare=False)  # set for edits, which collapse
    granted: asyncio.Future[_Grant] = field(compare=False)


@dataclass
class _ChatLine:
    waiting: list[_Ticket] = field(default_factory=list)
    edits: dict[int, _Ticket] = field(default_factory=dict)  # the waiting edit per message
    paused_until: float = 0.0  # loop time
    # Sends taken from the budget but not delivered: a 429'd attempt gives its send back for
    # its retry (or the next call), so one delivered message spends one send.
    credits: int = 0
    turn_free: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None

    def live(self) -> list[_Ticket]:
        return [t for t in self.waiting if not t.granted.done()]


class OutboundScheduler:
    def __init__(
        self,
        budget: SendBudget,
        *,
        max_pause: float = MAX_PAUSE_SECONDS,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self._budget = budget
        self._max_pause = max_pause
        self._max_retries = max_retries
        self._lines: dict[int, _ChatLine] = {}
        self._seq = itertools.count()
        self._closed = False

    async def send(self, chat_id: int, priority: Priority, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` (a send to ``chat_id``) in its turn; a 429 it raises is waited out and
        the call repeated, up to a point, before the caller gets the ``ChatRetryLater``."""
        return cast(T, await self._run(chat_id, priority, None, call))

    async def edit(
        self,
        chat_id: int,
        message_id: int,
        priority: Priority,
        call: Callable[[], Awaitable[object]],
    ) -> None:
        """As :meth:`send`, for an edit of one message: while it waits, a newer edit of the
        same message takes its place (and its caller returns at once, successfully)."""
        await self._run(chat_id, priority, message_id, call)

    def waiting(self, chat_id: int) -> int:
        """Calls for ``chat_id`` waiting for their turn."""
        line = self._lines.get(chat_id)
        return 0 if line is None else len(line.live())

    async def close(self) -> None:
        self._closed = True
        workers = [line.worker for line in self._lines.values() if line.worker is not None]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _run(
        self,
        chat_id: int,
        priority: Priority,
        message_id: int | None,
        call: Callable[[], Awaitable[Any]],
    ) -> Any:
        line = self._lines.setdefault(chat_id, _ChatLine())
        retries = 0
        seq: int | None = None
        while True:
            # A retry keeps the place in line of the first try.
            ticket = self._enqueue(chat_id, line, priority, message_id, seq)
            seq = ticket.seq
            try:
                grant = await ticket.granted
            except asyncio.CancelledError:
                self._withdraw(line, ticket)
                raise
            if grant is _Grant.SUPERSEDED:
                return None
            try:
                return await call()
            except ChatRetryLater as exc:
                line.credits += 1
                line.paused_until = max(
                    line.paused_until, asyncio.get_running_loop().time() + exc.retry_after
                )
                # Routine: Telegram's own count differs from ours, or another bot shares the
                # chat. Counted by the sender's error callback, not an error here.
                log.info(
                    "telegram_rate_limited",
                    chat_id=chat_id,
                    retry_after=exc.retry_after,
                    priority=priority.name,
                    retry=retries < self._max_retries and exc.retry_after <= self._max_pause,
                )
                if retries >= self._max_retries or exc.retry_after > self._max_pause:
                    raise
                retries += 1
                newer = line.edits.get(message_id) if message_id is not None else None
                if newer is not None and not newer.granted.done():
                    return None  # an edit that came in meanwhile carries the latest content
            finally:
                line.turn_free.set()

    def _enqueue(
        self,
        chat_id: int,
        line: _ChatLine,
        priority: Priority,
        message_id: int | None,
        seq: int | None,
    ) -> _Ticket:
        if self._closed:
            raise ChatUnavailable(f"chat {chat_id}: the sender is shut down")
        pause = line.paused_until - asyncio.get_running_loop().time()
        if pause > self._max_pause:
            raise ChatRetryLater(pause, f"chat {chat_id} is rate limited for {pause:.0f} s")
        if seq is None:
            seq = next(self._seq)
        older = line.edits.get(message_id) if message_id is not None else None
        if older is not None and not older.granted.done():
            # The newer edit keeps the older one's place in line.
            older.granted.set_result(_Grant.SUPERSEDED)
            priority = min(priority, Priority(older.priority))
            seq = older.seq
        ticket = _Ticket(priority, seq, message_id, asyncio.get_running_loop().create_future())
        heapq.heappush(line.waiting, ticket)
        if message_id is not None:
            line.edits[message_id] = ticket
        if line.worker is None:
            line.worker = asyncio.create_task(
                self._drive(chat_id, line), name=f"outbound-{chat_id}"
            )
        return ticket

    def _withdraw(self, line: _ChatLine, ticket: _Ticket) -> None:
        """The caller went away while waiting; a turn already given to it is handed on."""
        if ticket.message_id is not None and line.edits.get(ticket.message_id) is ticket:
            del line.edits[ticket.message_id]
        granted = ticket.granted
        given = granted.done() and not granted.cancelled() and granted.exception() is None
        if given and granted.result() is _Grant.GO:
            line.credits += 1  # taken for a call that was never made
            line.turn_free.set()

    async def _drive(self, chat_id: int, line: _ChatLine) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while line.waiting and line.waiting[0].granted.done():
                    heapq.heappop(line.waiting)
                if not line.waiting:
                    return
                pause = line.paused_until - loop.time()
                if pause > self._max_pause:
                    self._refuse(line, ChatRetryLater(pause, f"chat {chat_id} is rate limited"))
                    continue
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
                if line.credits == 0:
                    wait = await self._budget.reserve(chat_id)
                    if wait > 0:
                        await asyncio.sleep(wait)
                        continue
                    line.credits = 1
                # The most urgent call now waiting, which may have come in during the wait.
                while line.waiting and line.waiting[0].granted.done():
                    heapq.heappop(line.waiting)
                if not line.waiting:
                    return
                ticket = heapq.heappop(line.waiting)
                if ticket.message_id is not None and line.edits.get(ticket.message_id) is ticket:
                    del line.edits[ticket.message_id]
                line.credits -= 1
                line.turn_free.clear()
                ticket.granted.set_result(_Grant.GO)
                await line.turn_free.wait()
        except asyncio.CancelledError:
            self._refuse(line, ChatUnavailable(f"chat {chat_id}: the sender is shutting down"))
            raise
        except Exception as exc:
            log.exception("outbound_scheduler_failed", chat_id=chat_id)
            self._refuse(line, ChatUnavailable(f"chat {chat_id}: outbound scheduler failed: {exc}"))
        finally:
            # A send taken long ago would not be counted in the window it is finally used in.
            line.credits = 0
            line.worker = None

    @staticmethod
    def _refuse(line: _ChatLine, error: Exception) -> None:
        for ticket in line.live():
            ticket.granted.set_exception(error)
        line.waiting.clear()
        line.edits.clear()
