"""Rows added to a session, inserted with one statement per table instead of one per row.

The ORM inserts rows whose key the database generates (timeline events, jobs) one at a time
on SQLite: it must pair each row RETURNING gives back with its object, and SQLite gives it no
order to pair them by. A transaction that adds many such rows and never reads them back as
objects does not need their keys: here they go in as one Core ``executemany`` per table, and
their objects leave the session.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.storage.models import Base


async def insert_added(session: AsyncSession, *models: type[Base]) -> None:
    """Insert the session's pending new objects of ``models``, in the order they were added,
    without reading back what the database generates for them.

    Only for objects nothing uses after this (their generated key stays unset) and whose
    foreign keys point at rows already flushed.
    """
    for model in models:
        added = sorted(
            (obj for obj in session.new if type(obj) is model),
            key=lambda obj: inspect(obj).insert_order or 0,
        )
        if not added:
            continue
        columns = [attr.key for attr in inspect(model).column_attrs]
        # One statement per set of given columns: executemany needs the same keys in each row.
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for obj in added:
            values = {key: obj.__dict__[key] for key in columns if key in obj.__dict__}
            by_keys.setdefault(tuple(values), []).append(values)
            session.expunge(obj)
        for rows in by_keys.values():
            await session.execute(insert(model), rows)
