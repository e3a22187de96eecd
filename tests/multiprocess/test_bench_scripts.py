"""The bot benches run at a tiny size and print their figures: a bench that broke with the code
it measures is found here, not on the day someone needs its numbers. Nothing here is timed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.procs import REPO_ROOT


def run_bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_taps_bench_prints_both_bots() -> None:
    out = run_bench(
        *("bench.taps", "--rounds", "1", "--singles", "2", "--burst", "2"),
        *("--timeline-events", "5", "--timeline-commands", "1"),
    )
    assert out.count("p99 opsgate/bare") == 3, out
    assert "RSS opsgate" in out and "RSS bare" in out, out


def test_bot_api_pool_bench_prints_both_bots() -> None:
    out = run_bench(
        *("bench.bot_api_pool", "--repeats", "1", "--burst", "3", "--bursts", "2"),
        *("--round-trips-ms", "0,5"),
    )
    assert out.count("worst opsgate/bare") == 2, out
    assert out.count("opsgate  median") == 2 and out.count("bare     median") == 2, out


@pytest.mark.skipif(
    shutil.which("prometheus-alertmanager") is None
    and shutil.which("alertmanager") is None
    and not os.environ.get("CI"),
    reason="needs Debian's prometheus-alertmanager (.ci/run installs it)",
)
def test_storm_bench_delivers_every_incident() -> None:
    out = run_bench("bench.storm", "--groups", "2", "--chats", "2", "--group-wait", "0.2")
    assert out.count("all visible") == 2, out
    assert out.count("lost 0") == 2, out
