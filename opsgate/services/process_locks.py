"""Locks held for as long as a process lives, freed by the database or the kernel when it dies.

No lease to renew and no expiry to wait out: a PostgreSQL session-level advisory lock ends with
its session, and an ``flock`` ends with the last descriptor of its open file, so a process killed
with ``kill -9`` lets go at once, and a live one never loses its lock to a slow clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opsgate.services.storage.db import Database

# A lock query that hangs (a database behind a broken network) must not hold the caller for the
# minutes a TCP timeout takes: an unanswered check counts as a lost lock.
QUERY_TIMEOUT_SECONDS = 5.0

_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class LockUnavailable(Exception):
    """The database that keeps the lock cannot be asked; whether it is free is unknown."""


class ProcessLock(Protocol):
    @property
    def name(self) -> str: ...

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; True also when this object holds it already."""
        ...

    async def still_held(self) -> bool:
        """Whether this object still holds the lock (False once it is lost or released)."""
        ...

    async def release(self) -> None:
        """Let go; harmless when not held."""
        ...


def process_lock(db: Database, name: str) -> ProcessLock:
    """The lock called ``name`` among every process using ``db``."""
    if not db.is_sqlite:
        return AdvisoryLock(db.engine, name)
    db_file = sqlite_file(db.engine.url)
    if db_file is None:
        return InProcessLock(name)
    return FileLock(name, lock_file_path(db_file, name))


def advisory_key(name: str) -> int:
    """The advisory-lock key for ``name``: the first 8 bytes of SHA-256("opsgate:" + name), read
    as a big-endian signed 64-bit number (the ``bigint`` that ``pg_try_advisory_lock`` takes).

    A hash, not a counter or a table, so that every replica and every version derives the same
    key with nothing shared. Keys are scoped to the database, so deployments on separate
    databases of one server never meet; the prefix keeps opsgate's keys apart from those of
    other applications using the same database.
    """
    digest = hashlib.sha256(f"opsgate:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection kept out of the pool until
    release. The connection runs in autocommit: a transaction left open for a process's life
    would hold back vacuum and trip ``idle_in_transaction_session_timeout``."""

    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self._engine = engine
        self._name = name
        self.key = advisory_key(name)
        self._conn: AsyncConnection | None = None

    @property
    def name(self) -> str:
        return self._name

    async def try_acquire(self) -> bool:
        if self._conn is not None:
            return True
        try:
            async with asyncio.timeout(QUERY_TIMEOUT_SECONDS):
                conn = await self._engine.connect()
        except (OSError, SQLAlchemyError, TimeoutError) as exc:
            raise LockUnavailable(f"{self._name}: {exc}") from exc
        try:
            async with asyncio.timeout(QUERY_TIMEOUT_SECONDS):
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                won = await conn.scalar(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                )
        except (OSError, SQLAlchemyError, TimeoutError) as exc:
            # The answer may have been lost after the server granted the lock: only ending the
            # session is sure to free it.
            await _discard(conn)
            raise LockUnavailable(f"{self._name}: {exc}") from exc
        except asyncio.CancelledError:
            await _discard(conn)
            raise
        if not won:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def still_held(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        # pg_locks shows a bigint key as its high and low 32 bits, with objsubid 1.
        held_sql = text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() AND granted"
            " AND classid = :high AND objid = :low AND objsubid = 1)"
        )
        params = {"high": (self.key >> 32) & 0xFFFFFFFF, "low": self.key & 0xFFFFFFFF}
        try:
            async with asyncio.timeout(QUERY_TIMEOUT_SECONDS):
                return bool(await conn.scalar(held_sql, params))
        except (OSError, SQLAlchemyError, TimeoutError):
            # A dead session (a restarted server, a cut network) holds nothing any more.
            return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            async with asyncio.timeout(QUERY_TIMEOUT_SECONDS):
                unlocked = await conn.scalar(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
                )
        except (OSError, SQLAlchemyError, TimeoutError):
            unlocked = False
        except asyncio.CancelledError:
            await _discard(conn)
            raise
        if unlocked:
            await conn.close()
        else:
            # Never hand the pool a session that might still hold the lock.
            await _discard(conn)


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(OSError, SQLAlchemyError):
        await conn.invalidate()
    with contextlib.suppress(OSError, SQLAlchemyError):
        await conn.close()


class FileLock:
    """``flock`` on a file next to the SQLite database: every process that can open the database
    file can see it. The file is never deleted: a process could still be about to lock the old
    one, and two holders of two files would each think they hold the lock."""

    def __init__(self, name: str, path: Path) -> None:
        self._name = name
        self.path = path
        self._fd: int | None = None

    @property
    def name(self) -> str:
        return self._name

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        attempt = asyncio.ensure_future(asyncio.to_thread(_lock_file, self.path))
        try:
            fd = await asyncio.shield(attempt)
        except OSError as exc:
            raise LockUnavailable(f"{self._name}: {self.path}: {exc.strerror}") from exc
        except asyncio.CancelledError:
            # The thread cannot be stopped: should it win the lock after all, let go of it.
            attempt.add_done_callback(_close_won_lock)
            raise
        if fd is None:
            return False
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        fd = self._fd
        if fd is None:
            return False
        return await asyncio.to_thread(_names_same_file, fd, self.path)

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            await asyncio.to_thread(os.close, fd)


def _lock_file(path: Path) -> int | None:
    # O_CLOEXEC: a child process must not inherit the descriptor and keep the lock alive.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return fd


def _close_won_lock(attempt: asyncio.Future[int | None]) -> None:
    if not attempt.cancelled() and attempt.exception() is None:
        fd = attempt.result()
        if fd is not None:
            os.close(fd)


def _names_same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file we lock: had someone deleted it, the next process would
    lock a new file by that name while we hold the orphan."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    ours = os.fstat(fd)
    return (ours.st_dev, ours.st_ino) == (on_disk.st_dev, on_disk.st_ino)


class InProcessLock:
    """An in-memory SQLite database lives and dies with one process: nobody else can share it,
    so there is nobody to keep out."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._held = False

    @property
    def name(self) -> str:
        return self._name

    async def try_acquire(self) -> bool:
        self._held = True
        return True

    async def still_held(self) -> bool:
        return self._held

    async def release(self) -> None:
        self._held = False


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    if url.query.get("uri") == "true":
        database = database.removeprefix("file:")
    return Path(database).absolute()


def lock_file_path(db_file: Path, name: str) -> Path:
    """``<db file>.<name>.lock``; a name with characters unfit for a file name is spelled safely
    and given a hash of the original, so that two names never share a file."""
    safe = _UNSAFE_IN_FILE_NAME.sub("_", name)[:64]
    if safe != name:
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return db_file.with_name(f"{db_file.name}.{safe}.lock")
