"""Two processes appending to one audit chain on the real PostgreSQL keep it valid."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from opsgate.services import audit_chain
from opsgate.services.storage.db import Database
from opsgate.services.storage.schema_upgrade import upgrade_schema
from tests.conftest import drop_postgres, fresh_postgres_url

pytestmark = pytest.mark.postgres

APPENDS = 60

# Each child appends in its own transactions, two records each, as a decision would.
CHILD = """
import asyncio, sys
from opsgate.services import audit_chain
from opsgate.services.audit_chain import AuditKind
from opsgate.services.storage.db import Database
from opsgate.services.storage.schema_upgrade import upgrade_schema

async def main(url, name, n):
    db = Database(url)
    try:
        for i in range(n):
            async with db.transaction() as session:
                audit_chain.record(session, AuditKind.SIGNED, actor=name, i=i)
                audit_chain.record(session, AuditKind.APPROVED, actor=name, i=i)
    finally:
        await db.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url, name = await fresh_postgres_url()
    try:
        yield url
    finally:
        await drop_postgres(name)


async def test_two_processes_append_one_valid_chain(pg_url: str) -> None:
    db = Database(pg_url)
    await upgrade_schema(db)
    try:
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD, pg_url, name, str(APPENDS)
            )
            for name in ("replica-a", "replica-b")
        ]
        codes = await asyncio.gather(*(child.wait() for child in children))
        assert codes == [0, 0]
        verdict = await audit_chain.verify(db)
        assert verdict == audit_chain.Verdict(True, 4 * APPENDS)
    finally:
        await db.dispose()
