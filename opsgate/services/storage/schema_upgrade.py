"""Alembic: bring the schema to head, safe when many processes start at once.

Only ``opsgate migrate`` and ``python -m opsgate.migrate`` import this module (with Alembic and
Mako, ~5 MB): ``opsgate serve`` checks the schema's revision without it
(``schema_version.py``) and runs the migration in a child process when it is behind.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from opsgate.services.storage.db import Database
from opsgate.services.storage.schema_version import MIGRATIONS_DIR

log = structlog.get_logger(__name__)

# The advisory-lock key that serialises migrations on one PostgreSQL database: every replica and
# every `opsgate migrate` takes it, whatever its version. Advisory keys share one namespace per
# database, so it is a fixed constant that spells "opsgate" in ASCII and must never change.
MIGRATION_LOCK_KEY = 0x6F70_7367_6174_65


async def upgrade_schema(db: Database) -> None:
    """Bring the schema to head; safe when many processes start at once.

    Without a lock, two processes that both find no ``alembic_version`` both create it and
    one dies on a unique violation. The first to take the lock migrates; the others wait,
    then find the schema at head and do nothing.
    """
    async with _migration_file_lock(db), db.engine.begin() as conn:
        if not db.is_sqlite:
            # Held by this transaction, which also runs Alembic (PostgreSQL DDL is
            # transactional), so it is released exactly when the new schema is committed
            # or rolled back, and never left behind on a pooled connection.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        await conn.run_sync(_upgrade_to_head)
    log.info("database_migrated", dialect=db.engine.dialect.name)


@asynccontextmanager
async def _migration_file_lock(db: Database) -> AsyncIterator[None]:
    """For SQLite, an exclusive flock on ``<database file>.migrate.lock``.

    SQLite has no advisory locks. ``BEGIN IMMEDIATE`` alone makes a second migrator wait,
    but only for the busy timeout; a migration that rebuilds a big table takes longer, and
    the waiter would fail with "database is locked". A flock waits as long as it takes.
    """
    database = make_url(db.url).database if db.is_sqlite else None
    if not database or database == ":memory:":
        # PostgreSQL locks in the transaction; an in-memory database has one user.
        yield
        return
    path = Path(f"{database}.migrate.lock")
    acquire = asyncio.ensure_future(asyncio.to_thread(_lock_file, path))
    try:
        fd = await asyncio.shield(acquire)
    except asyncio.CancelledError:
        # The thread cannot be interrupted: let go of the lock whenever it gets it.
        acquire.add_done_callback(_close_acquired)
        raise
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _lock_file(path: Path) -> int:
    """Open (creating) ``path`` and block until this process holds an exclusive flock on it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _close_acquired(acquire: asyncio.Future[int]) -> None:
    if not acquire.cancelled() and acquire.exception() is None:
        os.close(acquire.result())


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade_to_head(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
