"""Resident memory of ``opsgate serve`` against a bare python-telegram-bot bot.

    .venv/bin/python -m bench.memory [--rounds 3] [--alerts 200] [--settle 5]
                                     [--env NAME=VALUE ...]

Both run as child processes against the Telegram stand-in of opsgate/sandbox (which runs in this
process, with the Kubernetes stand-in): opsgate exactly as the tests start it
(``python -m opsgate.cli serve``, SQLite in a fresh file, polling, job runner on), and a bare
bot that only polls and answers ``/start``. Rounds interleave them (opsgate first in odd rounds,
the bare bot first in even ones); each child is measured alone, ``--settle`` seconds after it
is up (opsgate: /healthz answers and it polls; the bare bot: it polls). Then ``--alerts`` new
alert groups go to opsgate's webhook, and its RSS is read again once every card is posted.

``--python`` runs both children with another interpreter, e.g. a venv with opsgate's
production dependencies only (``pip install -c requirements.lock .``, as deploy/Dockerfile
does), whose RSS is what a pod pays; this checkout's code comes first on its path either way.
``--env`` sets variables for the opsgate child only (e.g. ``--env PYTHONOPTIMIZE=0`` to see
what the defaults of deploy/Dockerfile save); the bench's own defaults are the image's.

Figures, not assertions: these machines are shared, so compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from tests.builders import alert, am_payload
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN
from tests.procs import REPO_ROOT, OpsgateProcess, OpsgateProcesses, serve_env

# What deploy/Dockerfile sets for the serve process's memory.
IMAGE_ENV = {"PYTHONOPTIMIZE": "2", "MALLOC_ARENA_MAX": "2"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _polls_now(telegram: FakeTelegram, before: int) -> None:
    await telegram.wait_for(lambda: telegram.waiting_long_polls > before, timeout=60)


async def _measure_opsgate(
    procs: OpsgateProcesses, telegram: FakeTelegram, env: dict[str, str], settle: float
) -> tuple[OpsgateProcess, float]:
    polls = telegram.waiting_long_polls
    child = await procs.serve(env)
    await child.wait_healthy()
    await _polls_now(telegram, polls)
    await asyncio.sleep(settle)
    return child, rss_mb(child.pid)


async def _measure_bare(telegram: FakeTelegram, python: str, settle: float) -> float:
    polls = telegram.waiting_long_polls
    proc = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "bench.bare_bot",
        "--api-url",
        telegram.root_url,
        "--token",
        telegram.token,
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        await _polls_now(telegram, polls)
        await asyncio.sleep(settle)
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        await proc.wait()


async def _fire_alerts(child: OpsgateProcess, telegram: FakeTelegram, count: int, tag: str) -> None:
    cards = len(telegram.messages(CHAT_ID))
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    async with httpx.AsyncClient(base_url=child.base_url, headers=headers, timeout=30) as http:
        for i in range(count):
            group = f'{{}}:{{alertname="Mem{tag}-{i}"}}'
            payload = am_payload(group, alert(f"fp-{tag}-{i}", alertname=f"Mem{tag}-{i}"))
            answer = await http.post("/webhook/alertmanager", json=payload)
            answer.raise_for_status()
    await telegram.wait_for(lambda: len(telegram.messages(CHAT_ID)) >= cards + count, timeout=600)


async def run(
    rounds: int, alerts: int, settle: float, extra_env: dict[str, str], python: str
) -> None:
    telegram, kube = FakeTelegram(), FakeKube()
    await telegram.start()
    await kube.start()
    telegram.add_chat(CHAT_ID, type="supergroup")
    idle: dict[str, list[float]] = {"opsgate": [], "bare": []}
    loaded: list[float] = []
    try:
        for number in range(rounds):
            with tempfile.TemporaryDirectory(prefix="opsgate-mem-") as tmp:
                workdir = Path(tmp)
                env = serve_env(
                    telegram, kube, f"sqlite+aiosqlite:///{workdir / 'opsgate.db'}", workdir
                )
                env.update(IMAGE_ENV)
                env.update(extra_env)
                procs = OpsgateProcesses(workdir, python=python)
                try:
                    if number % 2:
                        idle["bare"].append(await _measure_bare(telegram, python, settle))
                    child, rss = await _measure_opsgate(procs, telegram, env, settle)
                    idle["opsgate"].append(rss)
                    await child.terminate()
                    if not number % 2:
                        idle["bare"].append(await _measure_bare(telegram, python, settle))
                    if alerts:
                        child, _ = await _measure_opsgate(procs, telegram, env, settle)
                        await _fire_alerts(child, telegram, alerts, str(number))
                        await asyncio.sleep(settle)
                        loaded.append(rss_mb(child.pid))
                        await child.terminate()
                finally:
                    await procs.close()
            print(
                f"round {number + 1}: opsgate idle {idle['opsgate'][-1]:.1f} MB, "
                f"bare bot {idle['bare'][-1]:.1f} MB"
                + (f", opsgate after {alerts} alerts {loaded[-1]:.1f} MB" if alerts else ""),
                flush=True,
            )
    finally:
        await telegram.stop()
        await kube.stop()
    ours, bare = statistics.median(idle["opsgate"]), statistics.median(idle["bare"])
    print(f"interpreter: {python}")
    print(f"opsgate env: {' '.join(f'{k}={v}' for k, v in {**IMAGE_ENV, **extra_env}.items())}")
    print(f"idle RSS, median of {rounds}: opsgate {ours:.1f} MB, bare PTB bot {bare:.1f} MB")
    print(f"ratio opsgate / bare: {ours / bare:.2f}x (target: opsgate at most 90 MB)")
    if loaded:
        after = statistics.median(loaded)
        print(f"opsgate after {alerts} new alert groups, cards posted: {after:.1f} MB")


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--env", type=_env_pair, action="append", default=[])
    parser.add_argument("--python", default=sys.executable, help="the children's interpreter")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.alerts, args.settle, dict(args.env), args.python))


if __name__ == "__main__":
    main()
