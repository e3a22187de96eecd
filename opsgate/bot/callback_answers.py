"""Answering a tap while Telegram still listens: one answer, retried inside the 15 s window.

Telegram stops the tapping user's spinner only when the answer arrives, and refuses answers
15 s after the tap. A lost answer is worth another try while the window is open; past it,
or once Telegram says the query is too old, there is nothing left to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from opsgate.services.chat import ChatRejected, ChatRetryLater, ChatUnavailable

log = structlog.get_logger(__name__)

# Telegram's own window is 15 s from the tap; a retry must have left before then.
ANSWER_WINDOW_SECONDS = 14.0
# Short waits: the user is looking at a spinner.
BACKOFF_SECONDS = (0.3, 0.6, 1.2, 2.4)
# Telegram's description once an answer is too late, or was given already (a retry of an
# answer whose reply was lost); there is no error code for it.
QUERY_TOO_OLD = "query is too old"


@dataclass(frozen=True)
class AnswerWindow:
    """When the tap arrived, on ``clock`` (monotonic seconds), and how to wait."""

    arrived: float
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def closes(self) -> float:
        return self.arrived + ANSWER_WINDOW_SECONDS


async def answer_in_window(
    query_id: str, attempt: Callable[[], Awaitable[object]], window: AnswerWindow
) -> bool:
    """Send one callback answer; True once Telegram took it.

    A 429 waits its ``retry_after``, network trouble and 5xx wait a short backoff, each only
    when the next try still starts inside the window. Any other refusal is final.
    """
    tries = 0
    while True:
        try:
            await attempt()
            return True
        except ChatRetryLater as exc:
            wait = exc.retry_after
            error = str(exc)
        except ChatUnavailable as exc:
            wait = BACKOFF_SECONDS[min(tries, len(BACKOFF_SECONDS) - 1)]
            error = str(exc)
        except ChatRejected as exc:
            if QUERY_TOO_OLD in str(exc).lower():
                # Too late, or an earlier try did arrive and only its reply was lost.
                log.info("callback_answer_too_old", query_id=query_id, tries=tries + 1)
            else:
                log.warning("callback_answer_refused", query_id=query_id, error=str(exc))
            return False
        tries += 1
        if window.clock() + wait > window.closes:
            # The user sees a spinner time out; the decision itself is already stored.
            log.warning(
                "callback_answer_failed", query_id=query_id, tries=tries, error=error, wait=wait
            )
            return False
        log.info("callback_answer_retrying", query_id=query_id, tries=tries, wait=wait)
        await window.sleep(wait)
