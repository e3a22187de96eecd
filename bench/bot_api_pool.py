"""Bursts of Bot API calls: opsgate's bot (build_telegram) against the bare bot's PTB defaults.

    .venv/bin/python -m bench.bot_api_pool [--repeats 2] [--burst 100] [--bursts 10]
                                           [--round-trips-ms 0,40]

The stand-in (opsgate/sandbox) runs in this process and answers every call after the given
round trip; each bot runs in a child process, which sends ``--burst`` calls at once, then
pauses, over a fixed series of pauses, some shorter than httpx's 5 s keep-alive and some longer
(A B A B for each round trip). What it shows is the connection pool: httpcore (under PTB's
default client, the bare bot's) looks at every waiting request and pooled connection each time
a call starts or ends, so a burst is slow, and slower on a pool that a burst a moment before
left holding all its connections. opsgate's calls go over aiohttp's pool
(bot_api_client.AiohttpRequest).

It prints, per bot and round trip, the time of each burst's last answer (median and worst over
the runs) and the ratio opsgate/bare. The stand-in's delay is on the answer only: a new
connection costs no round trip here, where on a real network it costs one, and one more for TLS.
Figures, not assertions: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from telegram import Bot
from telegram.ext import Application

from bench.bare_bot import build_bare_bot
from bench.children import REPO_ROOT, UPDATE_CONCURRENCY
from opsgate.app import build_telegram
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.settings import Settings

BOTS = ("opsgate", "bare")
# Seconds between bursts. A burst 0.2-3 s after one that opened connections of its own meets
# them all still pooled; after 4.5-6 s they have expired.
PAUSES = (3.0, 0.5, 6.0, 3.0, 1.0, 3.0, 0.2, 3.0, 2.0, 4.5)
CHAT_ID = -1001234567890


def build_bot(name: str, api_url: str, token: str) -> Bot:
    application: Application[Any, Any, Any, Any, Any, Any]
    if name == "opsgate":
        application = build_telegram(
            Settings(
                telegram_token=token,
                alert_chat_id=CHAT_ID,
                telegram_api_url=api_url,
            )
        )
    else:
        application = build_bare_bot(api_url, token, UPDATE_CONCURRENCY)
    bot: Bot = application.bot
    return bot


async def send_bursts(bot: Bot, burst: int, bursts: int) -> list[float]:
    """Each burst's time until its last answer, in seconds."""
    times = []
    async with bot:
        for pause in PAUSES[:bursts]:
            started = time.perf_counter()
            await asyncio.gather(*(bot.get_me() for _ in range(burst)))
            times.append(time.perf_counter() - started)
            await asyncio.sleep(pause)
    return times


async def run_child(name: str, telegram: FakeTelegram, burst: int, bursts: int) -> list[float]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.bot_api_pool", "--child", name),
        *("--api-url", telegram.root_url, "--token", telegram.token),
        *("--burst", str(burst), "--bursts", str(bursts)),
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the {name} bot's bursts failed ({process.returncode})")
    times: list[float] = json.loads(out)
    return times


async def run(repeats: int, burst: int, bursts: int, round_trips: list[float]) -> None:
    print(
        f"{burst} Bot API calls at once, {bursts} bursts a run, {repeats} runs per bot "
        "and round trip, interleaved opsgate / bare; time to each burst's last answer"
    )
    for round_trip in round_trips:
        times: dict[str, list[float]] = {name: [] for name in BOTS}
        async with FakeTelegram() as telegram:
            telegram.delay_answer("getMe", round_trip, count=2 * repeats * burst * bursts)
            for _ in range(repeats):
                for name in BOTS:
                    times[name] += await run_child(name, telegram, burst, bursts)
        medians = {name: statistics.median(times[name]) for name in BOTS}
        worst = {name: max(times[name]) for name in BOTS}
        print(
            f"round trip {round_trip * 1000:.0f} ms: worst opsgate/bare = "
            f"{worst['opsgate'] / worst['bare']:.2f}x, median "
            f"{medians['opsgate'] / medians['bare']:.2f}x"
        )
        for name in BOTS:
            each = ", ".join(f"{t * 1000:.0f}" for t in times[name])
            print(
                f"  {name:<8} median {medians[name] * 1000:7.1f} ms  worst "
                f"{worst[name] * 1000:7.1f} ms  (each burst, ms: {each})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--bursts", type=int, default=len(PAUSES), help="at most 10")
    parser.add_argument("--round-trips-ms", default="0,40")
    parser.add_argument("--child", choices=BOTS, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        bot = build_bot(args.child, args.api_url, args.token)
        print(json.dumps(asyncio.run(send_bursts(bot, args.burst, args.bursts))))
        return
    if args.repeats < 1 or args.burst < 1:
        parser.error("--repeats and --burst must be at least 1")
    if not 1 <= args.bursts <= len(PAUSES):
        parser.error(f"--bursts must be between 1 and {len(PAUSES)}")
    try:
        round_trips = [float(ms) / 1000 for ms in args.round_trips_ms.split(",")]
    except ValueError:
        parser.error("--round-trips-ms: comma-separated milliseconds, such as 0,40")
    asyncio.run(run(args.repeats, args.burst, args.bursts, round_trips))


if __name__ == "__main__":
    main()
