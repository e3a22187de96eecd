"""``opsgate serve`` and friends. Bad settings end the process with one line, not a traceback."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, date, datetime
from importlib.metadata import version
from pathlib import Path

import structlog

from opsgate.app import Runtime, build_app, load_kube_client, migrate_database, open_database
from opsgate.logs import configure_logging
from opsgate.services import audit_chain
from opsgate.services.finetune_export import export_finetune
from opsgate.services.policy import Policy, PolicyError
from opsgate.services.policy_source import PolicySource
from opsgate.settings import Settings, SettingsError, load_database_settings, load_settings

log = structlog.get_logger(__name__)

# Not ``__doc__``: the image runs with PYTHONOPTIMIZE=2, which drops docstrings.
DESCRIPTION = "opsgate serve and friends: a Telegram ChatOps gate between alerts and changes."


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
    args = parser.parse_args(argv)
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
        asyncio.run(_serve(settings))
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


async def _serve(settings: Settings) -> None:
    policy = Policy.from_file(settings.policy_file) if settings.policy_file else Policy.empty()
    kube = await load_kube_client(settings)
    runtime = Runtime(build_app(settings, policy=PolicySource(policy), kube=kube))
    # Kubernetes stops a pod with SIGTERM. uvicorn catches it while it serves, but stops only
    # the HTTP server and then raises the signal again; with Python's default action that kills
    # the process before polling, the job runner and the database pool are shut down. With a
    # loop handler the second delivery lands here too, so the handler must be idempotent.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop_on_signal, runtime, signum)
    loop.add_signal_handler(signal.SIGHUP, _reload_on_signal, runtime)
    await runtime.run()


def _stop_on_signal(runtime: Runtime, signum: signal.Signals) -> None:
    if not runtime.stop.is_set():
        log.info("stop_signal_received", signal=signum.name)
        runtime.stop.set()


def _reload_on_signal(runtime: Runtime) -> None:
    log.info("reload_signal_received", signal="SIGHUP")
    runtime.request_reload()


if __name__ == "__main__":
    sys.exit(main())
