"""Replicas and ``opsgate migrate`` jobs started at the same instant on an empty database.

A Kubernetes rollout starts every replica at once, often beside a migrate Job: each of them
migrates on start. All must succeed, and the schema must end up at head exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.services.storage.schema_upgrade import alembic_config
from tests.conftest import drop_postgres, fresh_postgres_url
from tests.procs import OpsgateProcesses, serve_env

REPLICAS = 2
MIGRATE_JOBS = 2
# Each round costs four interpreter start-ups, which is most of this file's running time.
POSTGRES_ROUNDS = 10
SQLITE_ROUNDS = 3


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def start_all_at_once(
    procs: OpsgateProcesses, telegram: FakeTelegram, kube: FakeKube, url: str, workdir: Path
) -> None:
    """Two replicas and two migrate jobs on one empty database: all migrate, all succeed."""
    env = serve_env(telegram, kube, url, workdir)
    # Spawned back to back; each spends a second or more importing before it migrates, so
    # their migrations overlap.
    replicas = [
        await procs.serve(
            {**env, "OPSGATE_INSTANCE_ID": f"{workdir.name}-replica-{n}"},
            name=f"{workdir.name}-serve-{n}",
        )
        for n in range(REPLICAS)
    ]
    jobs = [
        await procs.migrate(env, name=f"{workdir.name}-migrate-{n}") for n in range(MIGRATE_JOBS)
    ]

    codes = await asyncio.gather(*(job.wait() for job in jobs))
    for job, code in zip(jobs, codes, strict=True):
        assert code == 0, job.describe()
        assert job.stderr() == "", job.describe()
    await asyncio.gather(*(replica.wait_healthy() for replica in replicas))
    codes = await asyncio.gather(*(replica.terminate() for replica in replicas))
    for replica, code in zip(replicas, codes, strict=True):
        # Exit 0 after the last log line: SIGTERM ran the whole shutdown.
        assert code == 0, replica.describe()
        assert '"opsgate_stopped"' in replica.stderr().splitlines()[-1], replica.describe()


async def postgres_versions(url: str) -> list[str]:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
    )
    try:
        return [row[0] for row in await conn.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await conn.close()


async def sqlite_versions(path: Path) -> list[str]:
    async with (
        aiosqlite.connect(path) as conn,
        conn.execute("SELECT version_num FROM alembic_version") as cursor,
    ):
        return [row[0] for row in await cursor.fetchall()]


@pytest.mark.postgres
async def test_replicas_and_migrate_jobs_start_together_on_postgres(
    procs: OpsgateProcesses, telegram: FakeTelegram, kube: FakeKube, tmp_path: Path
) -> None:
    for round_ in range(POSTGRES_ROUNDS):
        url, name = await fresh_postgres_url()
        try:
            await start_all_at_once(procs, telegram, kube, url, tmp_path / f"pg{round_}")
            assert await postgres_versions(url) == [head_revision()], f"round {round_}"
        finally:
            await procs.close()
            await drop_postgres(name)


async def test_replicas_and_migrate_jobs_start_together_on_sqlite(
    procs: OpsgateProcesses, telegram: FakeTelegram, kube: FakeKube, tmp_path: Path
) -> None:
    for round_ in range(SQLITE_ROUNDS):
        workdir = tmp_path / f"sqlite{round_}"
        path = workdir / "opsgate.db"
        await start_all_at_once(procs, telegram, kube, f"sqlite+aiosqlite:///{path}", workdir)
        assert await sqlite_versions(path) == [head_revision()], f"round {round_}"
