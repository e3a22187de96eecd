"""``python -m opsgate.migrate``: bring OPSGATE_DATABASE_URL's schema to head, then exit.

What ``opsgate serve`` (and ``migrate``, ``export``, ``audit``) run as a child process when
the schema is behind, so that Alembic is never loaded into the serving process. A database it
cannot use ends it with one line on stderr, ``opsgate: ...``, and exit status 2, which the
parent reports as its own.
"""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy.exc import SQLAlchemyError

from opsgate.logs import configure_logging
from opsgate.services.storage.db import Database, describe_database_error
from opsgate.services.storage.schema_upgrade import upgrade_schema
from opsgate.settings import SettingsError, load_database_settings


async def _upgrade(url: str) -> None:
    try:
        db = Database(url)
    except (SQLAlchemyError, ImportError) as exc:
        raise SettingsError(
            f"OPSGATE_DATABASE_URL is invalid: {describe_database_error(exc)}"
        ) from None
    try:
        await upgrade_schema(db)
    except (OSError, SQLAlchemyError) as exc:
        raise SettingsError(
            f"OPSGATE_DATABASE_URL: cannot use the database: {describe_database_error(exc)}"
        ) from None
    finally:
        await db.dispose()


def main() -> int:
    configure_logging("auto", "warning")
    try:
        asyncio.run(_upgrade(load_database_settings().database_url))
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"opsgate: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
