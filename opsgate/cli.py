"""``opsgate serve`` and friends. Bad settings end the process with one line, not a traceback."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib.metadata import version
from pathlib import Path

from opsgate.app import Runtime, build_app, load_kube_client
from opsgate.logs import configure_logging
from opsgate.services.policy import Policy, PolicyError
from opsgate.services.storage.db import Database
from opsgate.settings import Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opsgate", description=__doc__)
    parser.add_argument("--version", action="version", version=version("opsgate"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the bot, the HTTP API and the job runner")
    sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    check = sub.add_parser("check-policy", help="validate a policy file, then exit")
    check.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-policy":
            Policy.from_file(Path(args.path))
            print(f"policy ok: {args.path}")
            return 0
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
            return 0
        asyncio.run(_serve(settings))
        return 0
    except (SettingsError, PolicyError) as exc:
        print(f"opsgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _migrate(settings: Settings) -> None:
    db = Database(settings.database_url)
    try:
        await db.migrate()
    finally:
        await db.dispose()


async def _serve(settings: Settings) -> None:
    policy = Policy.from_file(settings.policy_file) if settings.policy_file else Policy.empty()
    kube = await load_kube_client(settings)
    await Runtime(build_app(settings, policy=policy, kube=kube)).run()


if __name__ == "__main__":
    sys.exit(main())
