"""Holding requests at a loopback stand-in: the moments a crash test kills its client in.

A hold catches the next matching requests at one point of their handling, either before the
stand-in acts on them (the request is in flight, nothing is done yet) or after it acted but
before it answers (the change is done, the answer is held back). The test waits until a request
is held, kills the client, restarts it and checks what survived.

A held request whose client went away is dropped, never resumed. Held before acting, it is
therefore never carried out, as the real server never acts on a request whose sender vanished
before it was processed; held after acting, the change stays and only the answer is lost. Both
stand-ins serve with aiohttp's ``handler_cancellation``, so a closed connection cancels the held
handler at once; ``release()`` looks at the connection again because the two can meet in one turn
of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from aiohttp import web

_T = TypeVar("_T")


class HoldOutcome(StrEnum):
    HELD = "held"  # still waiting for release()
    RELEASED = "released"  # went on: carried out (hold) or answered (hold_answer)
    DROPPED = "dropped"  # its client went away while it was held, or the stand-in stopped


@dataclass
class HeldRequest:
    """One request a hold caught, as the stand-in saw it on arrival."""

    method: str  # the HTTP method for the Kubernetes API, the Bot API method for Telegram
    path: str
    params: Mapping[str, Any]  # the query (Kubernetes) or the decoded parameters (Telegram)
    dry_run: bool = False
    at: float = field(default_factory=time.time)
    outcome: HoldOutcome = HoldOutcome.HELD


class Hold:
    """Catches the next ``count`` requests that ``matches`` accepts and keeps them until
    :meth:`release`. Made by the stand-ins' ``hold()`` and ``hold_answer()``."""

    def __init__(self, what: str, matches: Callable[[HeldRequest], bool], count: int) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.what = what
        self.requests: list[HeldRequest] = []  # every request caught, in order of arrival
        self._matches = matches
        self._remaining = count
        self._open = asyncio.Event()
        self._stopping = False
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Hold {self.what}: {[r.outcome.value for r in self.requests]}>"

    @property
    def released(self) -> bool:
        return self._open.is_set()

    def release(self) -> None:
        """Let the held requests go on (those whose client is still there) and catch no more."""
        self._remaining = 0
        self._open.set()

    def abandon(self) -> None:
        """Drop everything held: the stand-in is stopping."""
        self._stopping = True
        self.release()

    async def wait_arrived(self, timeout: float = 10.0) -> HeldRequest:
        """The first request caught, once it is held: the moment to kill the client."""
        return await self._wait_until(
            lambda: self.requests[0] if self.requests else None, timeout, "a request to arrive"
        )

    async def wait_dropped(self, timeout: float = 10.0) -> HeldRequest:
        """The first caught request whose client went away, once the stand-in noticed."""
        return await self._wait_until(
            lambda: next((r for r in self.requests if r.outcome is HoldOutcome.DROPPED), None),
            timeout,
            "a held request to be dropped",
        )

    def claims(self, request: HeldRequest) -> bool:
        if self._remaining <= 0 or not self._matches(request):
            return False
        self._remaining -= 1
        return True

    async def keep(self, held: HeldRequest, request: web.BaseRequest) -> None:
        """Wait for release(); raise CancelledError, writing nothing, if the client is gone."""
        self.requests.append(held)
        self._touch()
        try:
            await self._open.wait()
        except asyncio.CancelledError:  # aiohttp cancels the handler when the connection closes
            self._settle(held, HoldOutcome.DROPPED)
            raise
        transport = request.transport
        if self._stopping or transport is None or transport.is_closing():
            self._settle(held, HoldOutcome.DROPPED)
            if transport is not None:
                transport.close()
            # As the stand-ins' "drop" fault does: ending the handler this way writes no answer.
            raise asyncio.CancelledError
        self._settle(held, HoldOutcome.RELEASED)

    def _settle(self, held: HeldRequest, outcome: HoldOutcome) -> None:
        held.outcome = outcome
        self._touch()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, probe: Callable[[], _T | None], within: float, what: str) -> _T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            changed = self._changed
            value = probe()
            if value is not None:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"timed out after {within:g}s waiting for {what} at {self.what}; "
                    f"caught so far: {self.requests}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)


async def pass_holds(holds: list[Hold], held: HeldRequest, request: web.BaseRequest) -> None:
    """Wait at the first hold that claims the request, if any (see :meth:`Hold.keep`)."""
    hold = next((h for h in holds if h.claims(held)), None)
    if hold is not None:
        await hold.keep(held, request)
