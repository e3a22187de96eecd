"""Process locks and leadership, on SQLite and PostgreSQL, with real processes really killed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text

from opsgate.services.leadership import Leadership
from opsgate.services.process_locks import (
    AdvisoryLock,
    FileLock,
    ProcessLock,
    advisory_key,
    lock_file_path,
    process_lock,
)
from opsgate.services.storage.db import Database

# Holds the lock named argv[2] in the database argv[1] until killed.
HOLDER = """
import asyncio, sys
from opsgate.services.process_locks import process_lock
from opsgate.services.storage.db import Database

async def main() -> None:
    lock = process_lock(Database(sys.argv[1]), sys.argv[2])
    print("held" if await lock.try_acquire() else "busy", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def eventually(check: Callable[[], object], timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def acquired_eventually(lock: ProcessLock, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await lock.try_acquire():
        if loop.time() > deadline:
            raise TimeoutError(f"{lock.name} was never freed")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def holder(url: str, name: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process that has taken the lock (or failed the test if it could not)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, name, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.decode().strip() == "held"
        yield child
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def test_one_holder_at_a_time(database: Database) -> None:
    first = process_lock(database, "polling")
    second = process_lock(database, "polling")
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire()
        assert await first.still_held()
        assert not await second.still_held()
        await first.release()
        assert not await first.still_held()
        assert await second.try_acquire()
        assert not await first.try_acquire()
    finally:
        await first.release()
        await second.release()


async def test_different_names_do_not_conflict(database: Database) -> None:
    locks = [process_lock(database, name) for name in ("instance:a", "instance:b", "a/b", "a_b")]
    try:
        for lock in locks:
            assert await lock.try_acquire()
        for lock in locks:
            assert await lock.still_held()
    finally:
        for lock in locks:
            await lock.release()


async def test_a_killed_holder_lets_go(database: Database) -> None:
    lock = process_lock(database, "instance:web-1")
    try:
        async with holder(database.url, "instance:web-1") as child:
            assert not await lock.try_acquire()
            os.kill(child.pid, signal.SIGKILL)
            await child.wait()
            await acquired_eventually(lock)
        assert await lock.still_held()
    finally:
        await lock.release()


async def test_a_lock_held_here_keeps_a_child_out(database: Database) -> None:
    lock = process_lock(database, "telegram-polling")
    child = None
    try:
        assert await lock.try_acquire()
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLDER,
            database.url,
            "telegram-polling",
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.decode().strip() == "busy"
    finally:
        if child is not None:
            child.kill()
            await child.wait()
        await lock.release()


async def lose(database: Database, lock: ProcessLock) -> None:
    """Take the lock away the way it is lost in production: the database session ends (a
    restarted server, a cut connection), or the lock file is removed under SQLite."""
    if isinstance(lock, AdvisoryLock):
        key = advisory_key(lock.name)
        async with database.engine.connect() as conn:
            terminated = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND classid = :high AND objid = :low"
                    # Advisory keys are per database; other tests' databases hold the same keys.
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                ),
                {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
            )
        assert terminated == 1
    else:
        assert isinstance(lock, FileLock)
        lock.path.unlink()


async def test_a_lost_lock_is_reported_and_can_be_taken_again(database: Database) -> None:
    lock = process_lock(database, "telegram-polling")
    try:
        assert await lock.try_acquire()
        await lose(database, lock)
        assert not await lock.still_held()
        await lock.release()
        assert await lock.try_acquire()
        assert await lock.still_held()
    finally:
        await lock.release()


async def test_an_in_memory_database_needs_no_lock() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    try:
        lock = process_lock(db, "instance:a")
        assert await lock.try_acquire()
        assert await lock.still_held()
        await lock.release()
        assert not await lock.still_held()
    finally:
        await db.dispose()


def test_lock_files_lie_beside_the_database_one_per_name(tmp_path: Path) -> None:
    db_file = tmp_path / "opsgate.db"
    plain = lock_file_path(db_file, "telegram-polling")
    assert plain == tmp_path / "opsgate.db.telegram-polling.lock"
    spelled = {lock_file_path(db_file, name) for name in ("a/b", "a_b", "a:b", "../b")}
    assert len(spelled) == 4
    assert all(path.parent == tmp_path for path in spelled)


def test_advisory_keys_are_stable_signed_64_bit_numbers() -> None:
    key = advisory_key("telegram-polling")
    assert key == advisory_key("telegram-polling") != advisory_key("telegram-polling2")
    assert -(2**63) <= key < 2**63


class Candidate:
    """One replica's leadership loop, with a transcript of its callbacks."""

    def __init__(self, database: Database, name: str = "telegram-polling") -> None:
        self.lock = process_lock(database, name)
        self.events: list[str] = []
        self.leadership = Leadership(
            self.lock, on_elected=self._elected, on_deposed=self._deposed, interval=0.05
        )
        self.rival: Candidate | None = None
        self.rival_led_while_deposing = False
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.leadership.run(self.stop))

    async def _elected(self) -> None:
        self.events.append("elected")

    async def _deposed(self) -> None:
        # A slow hand-over (stopping a poll takes a moment): the next leader must wait for it.
        for _ in range(5):
            await asyncio.sleep(0.05)
            if self.rival is not None and self.rival.leadership.is_leader:
                self.rival_led_while_deposing = True
        self.events.append("deposed")

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)


async def test_one_of_two_candidates_leads_and_the_other_takes_over(database: Database) -> None:
    first, second = Candidate(database), Candidate(database)
    try:
        await eventually(lambda: first.leadership.is_leader or second.leadership.is_leader)
        leader, follower = (first, second) if first.leadership.is_leader else (second, first)
        # Many election rounds later the follower is still a follower.
        for _ in range(10):
            await asyncio.sleep(0.05)
            assert not follower.leadership.is_leader
        assert leader.events == ["elected"] and follower.events == []

        leader.rival = follower
        await leader.halt()
        assert leader.events == ["elected", "deposed"]
        assert not leader.rival_led_while_deposing
        await eventually(lambda: follower.leadership.is_leader)
        assert follower.events == ["elected"]
    finally:
        await first.halt()
        await second.halt()
    assert second.events[-1] == "deposed" and first.events[-1] == "deposed"


async def test_a_leader_that_loses_its_lock_is_deposed(database: Database) -> None:
    candidate = Candidate(database)
    try:
        await eventually(lambda: candidate.leadership.is_leader)
        await lose(database, candidate.lock)
        await eventually(lambda: "deposed" in candidate.events)
        # Nobody else wants it, so the same replica is elected again.
        await eventually(lambda: candidate.events == ["elected", "deposed", "elected"])
    finally:
        await candidate.halt()
    assert candidate.events == ["elected", "deposed", "elected", "deposed"]


async def test_a_candidate_is_elected_once_a_killed_leader_is_gone(database: Database) -> None:
    async with holder(database.url, "telegram-polling") as child:
        candidate = Candidate(database)
        try:
            for _ in range(10):
                await asyncio.sleep(0.05)
                assert not candidate.leadership.is_leader
            os.kill(child.pid, signal.SIGKILL)
            await child.wait()
            await eventually(lambda: candidate.leadership.is_leader)
        finally:
            await candidate.halt()
