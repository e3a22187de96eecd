"""Is the schema at head? Answered without Alembic, which ``opsgate serve`` does not load.

The head is read from the migration scripts' own ``revision`` / ``down_revision`` lines, the
database's revision from Alembic's ``alembic_version`` table.
"""

from __future__ import annotations

import asyncio
import re
from functools import cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from opsgate.services.storage.db import Database

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_REVISION = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*["\']([^"\']+)["\']', re.M)


@cache
def head_revision() -> str:
    """The one revision no other script names as its ``down_revision``."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            (revisions if name == "revision" else parents).add(value)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migration scripts have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


async def schema_is_current(db: Database) -> bool:
    """True if the database is at head; False if behind, empty, or not readable here (the
    migration then says why, in its own words)."""
    try:
        async with db.engine.connect() as conn:
            found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except (OSError, SQLAlchemyError):
        return False
    return [row[0] for row in found] == [await asyncio.to_thread(head_revision)]
