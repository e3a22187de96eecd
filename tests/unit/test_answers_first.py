"""A vote waits until no tap is being answered, for at most the patience."""

from __future__ import annotations

import asyncio

from opsgate.handlers.answers_first import AnswersFirst


async def test_votes_wait_for_every_answer_in_flight() -> None:
    order = AnswersFirst()
    events: list[str] = []
    answers_may_finish = asyncio.Event()

    async def tap(name: str) -> None:
        async with order.answering():
            await answers_may_finish.wait()
            events.append(f"answer {name}")
        await order.quiet()
        events.append(f"vote {name}")

    taps = [asyncio.create_task(tap(name)) for name in "abc"]
    await asyncio.sleep(0.01)
    answers_may_finish.set()
    await asyncio.gather(*taps)
    assert events[:3] == ["answer a", "answer b", "answer c"]
    assert sorted(events[3:]) == ["vote a", "vote b", "vote c"]


async def test_a_steady_stream_of_answers_holds_a_vote_only_for_the_patience() -> None:
    order = AnswersFirst(patience=0.05)
    never = asyncio.Event()

    async def answering_forever() -> None:
        async with order.answering():
            await never.wait()

    stream = asyncio.create_task(answering_forever())
    await asyncio.sleep(0)
    await asyncio.wait_for(order.quiet(), 1)
    stream.cancel()


async def test_with_no_answer_in_flight_a_vote_goes_at_once() -> None:
    await asyncio.wait_for(AnswersFirst(patience=30).quiet(), 1)


async def test_a_command_fetched_with_a_burst_waits_for_its_answers() -> None:
    order = AnswersFirst()
    events: list[str] = []
    release = asyncio.Event()

    async def command() -> None:
        await order.after_answers()
        events.append("command")

    async def tap(name: str) -> None:
        async with order.answering():
            await release.wait()
            events.append(f"answer {name}")

    # Fetched together, the command first, as its update came first: PTB starts them in order.
    tasks = [asyncio.create_task(command()), *(asyncio.create_task(tap(n)) for n in "ab")]
    await asyncio.sleep(0.01)
    assert events == []
    release.set()
    await asyncio.gather(*tasks)
    assert events == ["answer a", "answer b", "command"]
