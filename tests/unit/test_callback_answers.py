"""When a tap's answer is sent again: inside Telegram's window only, and never after a final
refusal. The clock is the test's, so the window closes without waiting for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from structlog.testing import capture_logs

from opsgate.bot.callback_answers import ANSWER_WINDOW_SECONDS, AnswerWindow, answer_in_window
from opsgate.services.chat import ChatError, ChatRejected, ChatRetryLater, ChatUnavailable

TOO_OLD = (
    "answerCallbackQuery: Query is too old and response timeout expired or query id is invalid"
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def window(self, age: float = 0.0) -> AnswerWindow:
        return AnswerWindow(self.now - age, lambda: self.now, self.sleep)


def failing(*errors: ChatError) -> tuple[Callable[[], Awaitable[None]], list[int]]:
    """An attempt that raises ``errors`` in turn, then succeeds; counts its calls."""
    tries = [0]

    async def attempt() -> None:
        tries[0] += 1
        if tries[0] <= len(errors):
            raise errors[tries[0] - 1]

    return attempt, tries


async def test_a_429_waits_its_retry_after() -> None:
    clock = Clock()
    attempt, tries = failing(ChatRetryLater(3))
    assert await answer_in_window("q", attempt, clock.window())
    assert (tries[0], clock.slept) == (2, [3])


async def test_server_errors_back_off_and_stop_before_the_window_closes() -> None:
    clock = Clock()
    attempt, tries = failing(*[ChatUnavailable("502 Bad Gateway")] * 100)
    with capture_logs() as logs:
        assert not await answer_in_window("q", attempt, clock.window())
    assert clock.slept[:3] == [0.3, 0.6, 1.2]
    assert sum(clock.slept) <= ANSWER_WINDOW_SECONDS
    assert tries[0] == len(clock.slept) + 1
    assert logs[-1]["event"] == "callback_answer_failed"


async def test_a_retry_after_past_the_window_is_not_waited_for() -> None:
    clock = Clock()
    attempt, tries = failing(ChatRetryLater(5))
    assert not await answer_in_window("q", attempt, clock.window(age=10))
    assert (tries[0], clock.slept) == (1, [])


async def test_query_too_old_is_final_and_only_noted() -> None:
    clock = Clock()
    attempt, tries = failing(ChatRejected(TOO_OLD))
    with capture_logs() as logs:
        assert not await answer_in_window("q", attempt, clock.window())
    assert (tries[0], clock.slept) == (1, [])
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("callback_answer_too_old", "info")
    ]


async def test_other_refusals_are_final() -> None:
    clock = Clock()
    attempt, tries = failing(ChatRejected("answerCallbackQuery: MESSAGE_TOO_LONG"))
    with capture_logs() as logs:
        assert not await answer_in_window("q", attempt, clock.window())
    assert (tries[0], clock.slept) == (1, [])
    assert logs[-1]["log_level"] == "warning"
