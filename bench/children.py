"""Child processes of the bot benches: the bare bot, and reading a child's memory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.settings import Settings

START_TIMEOUT_SECONDS = 60.0
REPO_ROOT = Path(__file__).resolve().parents[1]
UPDATE_CONCURRENCY = Settings.model_fields["update_concurrency"].default
# What stand_in_settings changes so that the tests run fast and a bench puts back to the
# defaults: Telegram's flood limits in opsgate's scheduler, the chat's card quota (beyond it a
# storm goes on the digest; the rig lifts it), and how often the job runner and the approval
# sweep look at the database (every 50 ms there, competing for SQLite's lock).
PRODUCTION_SETTINGS = {
    name: Settings.model_fields[name].default
    for name in (
        "telegram_chat_rate_per_second",
        "telegram_group_rate_per_minute",
        "telegram_overall_rate_per_second",
        "cards_per_minute",
        "job_poll_interval",
        "approval_sweep_seconds",
    )
}


def start_bare_bot(telegram: FakeTelegram, log: Path) -> subprocess.Popen[bytes]:
    """``bench.bare_bot`` polling ``telegram``, with opsgate's default update concurrency."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.bare_bot", "--api-url", telegram.root_url),
                *("--token", telegram.token, "--concurrency", str(UPDATE_CONCURRENCY)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: a bench's children keep nothing worth a clean exit, and a polling bot would
    sit out its long poll first."""
    process.kill()
    process.wait()


def rss_mib(pid: int) -> float:
    """Resident set size of a live process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system time of a live process, all its threads included, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_polling(telegram: FakeTelegram, process: subprocess.Popen[bytes]) -> None:
    """Until the bot long-polls ``telegram``; fails at once if it exited instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECONDS
    while telegram.waiting_long_polls == 0:
        if process.poll() is not None or loop.time() > deadline:
            raise RuntimeError(f"the bot is not polling {telegram.root_url} ({process.returncode})")
        await asyncio.sleep(0.1)
