"""Shared fixtures: databases (SQLite and the real PostgreSQL) and small builders."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import structlog
from sqlalchemy.engine import make_url

from opsgate.services.storage.db import Database
from opsgate.services.storage.schema_upgrade import upgrade_schema

PG_URL = os.environ.get(
    "OPSGATE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """A test that runs a command in-process (``opsgate.cli.main``) configures structlog for the
    whole process, at the command's level and with loggers cached on first use: a logger first
    used by a later test would keep that level, and its log capture would see nothing."""
    yield
    if structlog.is_configured():
        structlog.reset_defaults()


async def _admin(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )


async def fresh_postgres_url() -> tuple[str, str]:
    """A new, empty database next to the test one, so tests never see each other's rows."""
    name = f"opsgate_{uuid.uuid4().hex[:12]}"
    conn = await _admin(PG_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return str(make_url(PG_URL).set(database=name).render_as_string(hide_password=False)), name


async def drop_postgres(name: str) -> None:
    conn = await _admin(PG_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}"
        return
    url, name = await fresh_postgres_url()
    try:
        yield url
    finally:
        await drop_postgres(name)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    await upgrade_schema(db)
    try:
        yield db
    finally:
        await db.dispose()
