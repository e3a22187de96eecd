"""Engine and session factory (the schema: schema_upgrade.py and schema_version.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Select, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


class Database:
    """Owns the engine. Sessions are short: one per unit of work."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        connect_args: dict[str, Any] = {"timeout": 30} if self.is_sqlite else {}
        self.engine: AsyncEngine = create_async_engine(
            url, echo=echo, connect_args=connect_args, pool_pre_ping=not self.is_sqlite
        )
        if self.is_sqlite:
            _serialise_sqlite_writers(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )
        self._commit_listeners: dict[str, list[Callable[[], None]]] = {}
        # SQL text, parameter order and the statement's own values (a LIMIT's, say) of the
        # statements ``read_row`` has sent to SQLite.
        self._compiled: dict[
            Select[*tuple[Any, ...]], tuple[str, tuple[str, ...], dict[str, Any]]
        ] = {}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        This is the unit of work: what a transaction marked with :func:`after_commit` (new
        jobs, say) is announced to its listeners only once the commit succeeded.
        """
        async with self.sessions() as session:
            async with session.begin():
                yield session
                # Last, so whatever lock a writer takes is the transaction's last one.
                for writer in session.info.pop(_BEFORE_COMMIT, {}).values():
                    await writer(session)
            for topic in session.info.pop(_AFTER_COMMIT, ()):
                for listener in self._commit_listeners.get(topic, ()):
                    listener()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only, in one transaction that ends without a commit.

        On SQLite it begins deferred, not with ``BEGIN IMMEDIATE``: WAL gives it a snapshot
        without the write lock, so a check that finds nothing to do never queues behind
        writers, nor makes them wait. Nothing written in it is kept.
        """
        # Closing, unlike rolling back, leaves what was loaded readable after the block.
        async with self._read_sessions() as session:
            yield session

    async def read_row(
        self, statement: Select[*tuple[Any, ...]], **params: Any
    ) -> tuple[Any, ...] | None:
        """The first row of :meth:`read_rows`."""
        rows = await self.read_rows(statement, **params)
        return rows[0] if rows else None

    async def read_rows(
        self, statement: Select[*tuple[Any, ...]], **params: Any
    ) -> list[tuple[Any, ...]]:
        """The rows of one ``select`` (values for its ``bindparam``s in ``params``), read as a
        single statement without a transaction.

        For the hottest read of all, the check that a webhook re-send changes nothing. One
        statement sees one snapshot on its own, so no ``BEGIN`` is needed. On SQLite the
        statement goes to the driver in one call: each call through the ORM is a hand-off to
        the connection's thread and back, and a session's read takes about nine (begin,
        cursor, execute, fetch, close, rollback). Columns come back as the driver gives them,
        without SQLAlchemy's type processing: only for plain strings and integers.
        """
        if not self.is_sqlite:
            async with self._read_sessions() as session:
                return [tuple(row) for row in (await session.execute(statement, params)).all()]
        sql, names, own = self._compiled.get(statement) or self._compile(statement)
        values = {**own, **params}
        async with self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is None:
                raise RuntimeError("the pooled SQLite connection is closed")
            try:
                rows = await driver.execute_fetchall(sql, tuple(values[name] for name in names))
            except sqlite3.Error as exc:
                # As SQLAlchemy would raise it, so callers handle one kind of database error.
                raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        return [tuple(row) for row in rows]

    def _compile(
        self, statement: Select[*tuple[Any, ...]]
    ) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        compiled = statement.compile(dialect=self.engine.dialect)
        self._compiled[statement] = (
            str(compiled),
            tuple(compiled.positiontup or ()),
            dict(compiled.params),
        )
        return self._compiled[statement]

    def on_commit(self, topic: str, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every committed transaction marked with ``topic``."""
        self._commit_listeners.setdefault(topic, []).append(listener)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


_AFTER_COMMIT = "opsgate_after_commit"
_BEFORE_COMMIT = "opsgate_before_commit"
# The execution option that marks the connections of ``Database.read``.
_READ_ONLY = "opsgate_read_only"


def after_commit(session: AsyncSession, topic: str) -> None:
    """Mark the session's transaction: once it commits, ``topic``'s listeners are told."""
    topics: set[str] = session.info.setdefault(_AFTER_COMMIT, set())
    topics.add(topic)


def before_commit(
    session: AsyncSession, name: str, writer: Callable[[AsyncSession], Awaitable[None]]
) -> None:
    """Run ``writer`` once, at the end of the session's transaction, just before its commit.

    For writes that must be the transaction's last (the audit chain takes its head row's lock
    there, so no transaction waits for another lock while holding it). One writer per name.
    """
    writers: dict[str, Callable[[AsyncSession], Awaitable[None]]] = session.info.setdefault(
        _BEFORE_COMMIT, {}
    )
    writers.setdefault(name, writer)


def _serialise_sqlite_writers(engine: AsyncEngine) -> None:
    """Start every SQLite transaction with BEGIN IMMEDIATE, except those of ``Database.read``.

    pysqlite begins lazily and upgrades a read lock to a write lock on the first write; two
    such transactions deadlock and one fails at once with "database is locked". Taking the
    write lock up front makes concurrent approvals queue on the busy timeout instead. A
    transaction that never writes cannot deadlock so, and begins deferred.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def describe_database_error(exc: BaseException) -> str:
    """One line for an operator: the driver's own words, without SQLAlchemy's SQL and link."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__
