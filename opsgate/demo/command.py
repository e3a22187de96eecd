"""``opsgate demo``: the page (default), or one scenario played in the terminal (``--headless``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from opsgate.demo.page import DemoPage
from opsgate.demo.scenarios import BY_NAME, SCENARIOS
from opsgate.demo.session import DemoSession
from opsgate.logs import configure_logging
from opsgate.serve import handle_signals
from opsgate.settings import SettingsError


def run(args: argparse.Namespace) -> int:
    known = ", ".join(scenario.name for scenario in SCENARIOS)
    if args.scenario is not None and args.scenario not in BY_NAME:
        print(f"opsgate: no scenario {args.scenario!r}; scenarios: {known}", file=sys.stderr)
        return 2
    if args.headless and args.scenario is None:
        print(f"opsgate: --headless needs --scenario NAME (one of: {known})", file=sys.stderr)
        return 2
    if args.scenario is not None and not args.headless:
        print("opsgate: --scenario is for --headless; the page fires any of them", file=sys.stderr)
        return 2
    configure_logging("console", "warning")
    with tempfile.TemporaryDirectory(prefix="opsgate-demo-") as workdir:
        try:
            if args.headless:
                print(asyncio.run(headless(Path(workdir), args.scenario)))
            else:
                asyncio.run(_page(Path(workdir), args.port))
        except SettingsError as exc:
            print(f"opsgate: {exc}", file=sys.stderr)
            return 2
    return 0


async def headless(workdir: Path, name: str) -> str:
    """Play scenario ``name`` from start to end; returns the transcript."""
    scenario = BY_NAME[name]
    async with DemoSession(workdir, resolve_after=0.5) as demo:
        steps = await demo.play(name)
        transcript = demo.transcript()
    return "\n".join([f"# {scenario.title}: {scenario.blurb}", *steps, "", transcript])


async def _page(workdir: Path, port: int) -> None:
    async with DemoSession(workdir) as demo, DemoPage(demo, port=port) as page:
        assert demo.runtime is not None and demo.done is not None
        handle_signals(demo.runtime)
        print(f"opsgate demo: {page.url}", flush=True)
        await asyncio.shield(demo.done)
