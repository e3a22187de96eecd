"""Lookups that arrive while a read is in flight share the next read, and only the next."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from opsgate.services.storage.read_batches import ReadBatches


class Store:
    """A key-value store whose next reads can be held in flight."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.reads: list[list[str]] = []
        self.holds: list[asyncio.Event] = []
        self.in_flight = asyncio.Event()
        self.fail: Exception | None = None

    def hold_next(self) -> asyncio.Event:
        """The next read waits, once it has taken its snapshot, until this is set."""
        self.holds.append(asyncio.Event())
        return self.holds[-1]

    async def read_many(self, keys: Sequence[str]) -> dict[str, int]:
        # The snapshot is taken when the read starts, as a database statement's is.
        snapshot = {k: self.values[k] for k in keys if k in self.values}
        self.reads.append(list(keys))
        if self.holds:
            hold = self.holds.pop(0)
            self.in_flight.set()
            await hold.wait()
            self.in_flight.clear()
        if self.fail is not None:
            raise self.fail
        return snapshot


async def _held(
    store: Store, batches: ReadBatches[str, int], key: str
) -> tuple[asyncio.Task[int | None], asyncio.Event]:
    """A lookup whose read is in flight and held at the store, and what releases it."""
    release = store.hold_next()
    task = asyncio.ensure_future(batches.get(key))
    await store.in_flight.wait()
    return task, release


async def test_lookups_waiting_for_a_read_share_the_next_one() -> None:
    store = Store()
    store.values.update(a=1, b=2)
    batches = ReadBatches(store.read_many)
    first, release = await _held(store, batches, "a")
    waiting = [asyncio.ensure_future(batches.get(k)) for k in ("a", "b", "b", "c")]
    await asyncio.sleep(0)
    release.set()
    assert await first == 1
    assert await asyncio.gather(*waiting) == [1, 2, 2, None]
    # One read for the first lookup, one for the four that came meanwhile, each key once.
    assert store.reads == [["a"], ["a", "b", "c"]]
    assert (batches.reads, batches.lookups) == (2, 5)


async def test_a_lookup_sees_what_was_written_while_an_earlier_read_was_in_flight() -> None:
    store = Store()
    store.values["a"] = 1
    batches = ReadBatches(store.read_many)
    first, release = await _held(store, batches, "a")
    # Committed after the first read took its snapshot, before the second lookup came.
    store.values["a"] = 2
    second = asyncio.ensure_future(batches.get("a"))
    await asyncio.sleep(0)
    release.set()
    assert (await first, await second) == (1, 2)


async def test_a_failed_read_fails_every_lookup_it_carried_and_the_next_reads_again() -> None:
    store = Store()
    batches = ReadBatches(store.read_many)
    first, release = await _held(store, batches, "a")
    second = asyncio.ensure_future(batches.get("a"))
    third = asyncio.ensure_future(batches.get("b"))
    await asyncio.sleep(0)
    store.fail = RuntimeError("database is gone")
    release.set()
    with pytest.raises(RuntimeError):
        await first
    # The two that waited shared the second read, which failed too.
    for task in (second, third):
        with pytest.raises(RuntimeError):
            await task
    store.fail = None
    store.values["a"] = 7
    assert await batches.get("a") == 7


async def test_lookups_in_line_are_answered_when_the_reading_caller_is_cancelled() -> None:
    store = Store()
    store.values.update(a=1, b=2)
    batches = ReadBatches(store.read_many)
    first, release = await _held(store, batches, "a")
    second = asyncio.ensure_future(batches.get("a"))
    third = asyncio.ensure_future(batches.get("b"))
    await asyncio.sleep(0)
    store.hold_next()
    release.set()
    assert await first == 1
    # The second lookup now leads the read of a and b, and is cancelled while it is held.
    await store.in_flight.wait()
    assert store.reads[-1] == ["a", "b"]
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    # The third was not answered by that read: it reads again, on its own.
    assert await third == 2
    assert store.reads[-1] == ["b"]


async def test_no_more_keys_than_the_bound_go_in_one_read() -> None:
    store = Store()
    batches = ReadBatches(store.read_many, max_keys=2)
    first, release = await _held(store, batches, "a")
    waiting = [asyncio.ensure_future(batches.get(k)) for k in ("b", "c", "b", "d")]
    await asyncio.sleep(0)
    release.set()
    await first
    await asyncio.gather(*waiting)
    assert store.reads == [["a"], ["b", "c"], ["d"]]
