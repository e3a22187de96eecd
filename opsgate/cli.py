"""``opsgate serve`` and friends. Bad settings end the process with one line, not a traceback."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib.metadata import version
from pathlib import Path

from opsgate.app import migrate_database, open_database
from opsgate.logs import configure_logging
from opsgate.serve import serve
from opsgate.services import audit_chain
from opsgate.services.finetune_export import export_finetune
from opsgate.services.policy import Policy, PolicyError
from opsgate.settings import SettingsError, load_database_settings, load_settings

# Not ``__doc__``: the image runs with PYTHONOPTIMIZE=2, which drops docstrings.
DESCRIPTION = "opsgate serve and friends: a Telegram ChatOps gate between alerts and changes."

# `opsgate demo` runs opsgate against the Bot API and Kubernetes stand-ins of opsgate.sandbox.
# Its module is imported only when the command is chosen: `opsgate serve` and the other
# commands must never load the stand-ins (nor anything else that exists only for the demo).
DEMO_MODULE = "opsgate.demo.command"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opsgate", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=version("opsgate"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the bot, the HTTP API and the job runner")
    sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    check = sub.add_parser("check-policy", help="validate a policy file, then exit")
    check.add_argument("path")
    export = sub.add_parser("export", help="export data, then exit")
    export.add_argument("what", choices=["finetune"])
    export.add_argument("--since", required=True, type=_utc_date, help="YYYY-MM-DD (UTC)")
    export.add_argument("--out", required=True, type=Path, help="the JSONL file to write")
    audit = sub.add_parser("audit", help="check or export the tamper-evident audit chain")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check every record; exit 1 naming the first broken one")
    audit_export = audit_sub.add_parser("export", help="write the chain as JSON lines")
    audit_export.add_argument("--since", required=True, type=_utc_date, help="YYYY-MM-DD (UTC)")
    audit_export.add_argument("--out", type=Path, help="the JSONL file (default: stdout)")
    demo = sub.add_parser(
        "demo", help="the whole loop in a browser, against simulated Telegram and Kubernetes"
    )
    demo.add_argument("--port", type=int, default=8090, help="the page's port on 127.0.0.1")
    demo.add_argument("--scenario", help="the scenario to play (with --headless)")
    demo.add_argument(
        "--headless", action="store_true", help="no page: play --scenario, print the transcript"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo: Callable[[argparse.Namespace], int] = importlib.import_module(DEMO_MODULE).run
        return run_demo(args)
    try:
        if args.command == "check-policy":
            Policy.from_file(Path(args.path))
            print(f"policy ok: {args.path}")
            return 0
        if args.command == "audit":
            configure_logging("auto", "warning")
            url = load_database_settings().database_url
            return asyncio.run(_audit(url, args))
        if args.command in ("migrate", "export"):
            configure_logging("auto", "warning")
            url = load_database_settings().database_url
            if args.command == "migrate":
                asyncio.run(_migrate(url))
            else:
                count = asyncio.run(_export(url, args.since, args.out))
                print(f"wrote {count} records to {args.out}")
            return 0
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        asyncio.run(serve(settings))
        return 0
    except (SettingsError, PolicyError) as exc:
        for line in str(exc).splitlines():
            print(f"opsgate: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _migrate(url: str) -> None:
    db = open_database(url)
    try:
        await migrate_database(db)
    finally:
        await db.dispose()


async def _export(url: str, since: datetime, out: Path) -> int:
    db = open_database(url)
    try:
        await migrate_database(db)
        return await export_finetune(db, since, out)
    finally:
        await db.dispose()


async def _audit(url: str, args: argparse.Namespace) -> int:
    db = open_database(url)
    try:
        await migrate_database(db)
        if args.audit_command == "export":
            count = await audit_chain.export_to(db, args.since, args.out, sys.stdout)
            if args.out is not None:
                print(f"wrote {count} records to {args.out}")
            return 0
        verdict = await audit_chain.verify(db)
    finally:
        await db.dispose()
    if verdict.ok:
        print(f"audit chain ok: {verdict.records} records")
        return 0
    print(
        f"audit chain broken at record {verdict.broken_seq}: {verdict.reason} "
        f"({verdict.records} records before it are intact)",
        file=sys.stderr,
    )
    return 1


def _utc_date(text: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


if __name__ == "__main__":
    sys.exit(main())
