"""Latency and memory of the approval loop, measured against the loopback stand-ins.

    .venv/bin/python -m bench.approval_loop [--alerts 50] [--database-url URL]

Prints, for N alert groups: webhook response time, alert -> card visible, tap -> callback
answer, tap -> result reply, and the process's peak RSS. Figures, not assertions: these
machines are shared, so compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from opsgate.logs import configure_logging
from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage, FakeTelegram
from tests.builders import ALICE, alert, am_payload, policy
from tests.e2e.rig import CHAT_ID, Rig


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(len(ordered) * 0.95) - 1)]
    return (
        f"{name:<26} n={len(ordered):<4} p50={statistics.median(ordered) * 1000:8.1f} ms"
        f"  p95={p95 * 1000:8.1f} ms  max={ordered[-1] * 1000:8.1f} ms"
    )


async def run(alerts: int, database_url: str | None) -> None:
    telegram, kube = FakeTelegram(), FakeKube()
    await telegram.start()
    await kube.start()
    telegram.add_chat(CHAT_ID, type="supergroup")
    kube.add_deployment("shop", "checkout", replicas=2)
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        rig = Rig(telegram, kube, policy(), Path(tmp), url)
        await rig.start()
        try:
            ingest, to_card, to_answer, to_reply = [], [], [], []
            for i in range(alerts):
                started = time.perf_counter()
                response = await rig.post_alert(am_payload(f"bench-{i}", alert(f"fp{i}")))
                ingest.append(time.perf_counter() - started)
                response.raise_for_status()

                def card_of(group: int = i) -> FakeMessage | None:
                    cards = rig.cards()
                    return cards[group] if len(cards) > group else None

                await telegram.wait_for(lambda: card_of() is not None, 30)
                to_card.append(time.perf_counter() - started)
                card = card_of()
                assert card is not None
                data = next(d for _t, d in card.buttons if d and d.startswith("v1:ap:"))
                tapped = time.perf_counter()
                query = telegram.tap(CHAT_ID, card.message_id, telegram.user(ALICE, "alice"), data)
                await telegram.wait_answer(query, 30)
                to_answer.append(time.perf_counter() - tapped)
                await rig.wait_reply(card.message_id, timeout=30)
                to_reply.append(time.perf_counter() - tapped)
        finally:
            await rig.stop()
            await telegram.stop()
            await kube.stop()
    print(f"opsgate approval loop, {alerts} alert groups, {url.split(':')[0]}")
    print(_summary("webhook response", ingest))
    print(_summary("alert -> card visible", to_card))
    print(_summary("tap -> callback answer", to_answer))
    print(_summary("tap -> result reply", to_reply))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{'peak RSS (whole process)':<26} {peak_kib / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    configure_logging("console", "warning")
    asyncio.run(run(args.alerts, args.database_url))


if __name__ == "__main__":
    main()
