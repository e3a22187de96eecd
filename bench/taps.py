"""Tap -> callback answer latency: ``opsgate serve`` against a bare python-telegram-bot handler.

    .venv/bin/python -m bench.taps [--rounds 4] [--singles 10] [--burst 100]
                                   [--timeline-events 1000] [--timeline-commands 5]
                                   [--database-url URL]

Two bots run as child processes, each polling its own Telegram stand-in (opsgate/sandbox) in this
process: a real ``opsgate serve`` (a fresh SQLite file, or a scratch PostgreSQL database
given as for bench.ingest; the test policy plus approvers; its default flood limits and
polling intervals, and a card quota that posts all of the bench's cards) and
``bench.bare_bot``, whose only handler answers, tapped on messages shaped like opsgate's cards
(Telegram sends the tapped message with every tap).
Each round runs every scenario on opsgate, then on the bare bot (A B A B):

* one tap at a time (``--singles`` of them, approvers and non-members in turn), each waited for
  and followed by 1.1 s for the bot to finish with it (its card edit waits for the chat's
  budget of one message a second);
* ``--burst`` taps at once on one card, half from approvers (each a real vote; the quorum is
  out of reach so every tap is one) and half from people the policy does not know;
* the same burst sent right after ``--timeline-commands`` ``/timeline`` commands for an incident
  with ``--timeline-events`` events (the bare bot gets the commands too and ignores them).

Each scenario starts 3 s after the one before, once the bot is done with its votes and edits.
Latency is from the tap (the update queued at the stand-in) to the stand-in carrying out
``answerCallbackQuery``; this process does no garbage collection while taps are timed (a
full collection of its stand-ins' heap would delay the answers of whichever bot it met). It
prints p50/p99 per target and the ratio opsgate/bare, the ``/timeline`` answers' latency, and
both bots' RSS before and after. Figures, not assertions: these machines are shared, so
compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.children import (
    PRODUCTION_SETTINGS,
    cpu_seconds,
    rss_mib,
    start_bare_bot,
    stop_process,
    wait_polling,
)
from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage, FakeTelegram, FakeUser
from opsgate.services import timeline
from opsgate.services.storage.db import Database
from tests.builders import ALICE, alert, am_payload, policy_document
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN
from tests.procs import OpsgateProcess, OpsgateProcesses, serve_env

TARGETS = ("opsgate", "bare")
SCENARIOS = ("1 tap", "burst", "burst during /timeline")
APPROVER_IDS = range(20_000, 20_050)
STRANGER_IDS = range(90_000, 90_050)
INCIDENT = re.compile(r"INC-[0-9A-Z]{4,12}")
ANSWER_TIMEOUT = 120.0
# A single tap comes to a bot done with the one before (its vote written, its card edited),
# and each scenario to a bot done with the last: taps milliseconds apart are what the bursts
# measure, and a burst's own votes and card edits are not the next scenario's load.
# A vote's card edit goes out when the chat's budget of one message a second allows.
SETTLE_SECONDS = 1.1
SCENARIO_SETTLE_SECONDS = 3.0


def bench_policy() -> dict[str, Any]:
    """The test policy plus 50 more approvers, with a quorum none of the taps reach (every
    operation needs as many approvers as the admins are, and the taps never add up to it)."""
    document = policy_document()
    document["users"] += [
        {"id": uid, "name": f"approver{uid}", "roles": ["admin"]} for uid in APPROVER_IDS
    ]
    approvers = sum(1 for u in document["users"] if "admin" in u["roles"])
    document["quorum"] = {risk: approvers for risk in ("low", "medium", "high", "critical")}
    return document


def tappers(telegram: FakeTelegram, count: int) -> list[FakeUser]:
    """Approvers and strangers in turn."""
    users = [
        telegram.user(uid, f"u{uid}")
        for pair in zip(APPROVER_IDS, STRANGER_IDS, strict=True)
        for uid in pair
    ]
    return users[:count]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(len(ordered) * q))]


@dataclass
class Target:
    """One bot under test, its stand-in, and what can be tapped there."""

    name: str
    telegram: FakeTelegram
    pid: int
    # A message for each tap scenario of each round, and the callback data its taps carry.
    tappable: list[tuple[int, str]] = field(default_factory=list)
    timeline_incident: str = "INC-NONE0000"
    rss_idle: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # scenario -> the bot's CPU seconds

    def spent(self, scenario: str, since: float) -> float:
        """Adds the CPU time used since ``since`` to ``scenario``; returns the new reading."""
        now = cpu_seconds(self.pid)
        self.cpu[scenario] = self.cpu.get(scenario, 0.0) + now - since
        return now

    def tap(self, message_id: int, data: str, user: FakeUser) -> str:
        # tap_stale: the card is edited as votes arrive; a phone keeps tapping what it shows.
        return self.telegram.tap_stale(CHAT_ID, message_id, user, data)


@dataclass(frozen=True)
class Sample:
    seconds: float
    approver: bool  # False: someone the policy does not know


async def tap_and_time(
    target: Target, message_id: int, data: str, users: list[FakeUser]
) -> list[Sample]:
    """Taps by all ``users`` at once; how long until each was answered."""
    telegram = target.telegram
    # Only this burst's calls are read: the predicate runs on every change at the stand-in,
    # in the process that serves it, so reading the whole history would slow both bots.
    first = len(telegram.calls)
    sent = {target.tap(message_id, data, user): (time.time(), user.id) for user in users}

    def answered() -> dict[str, float]:
        return {
            call.params["callback_query_id"]: call.at
            for call in telegram.calls[first:]
            if call.method == "answerCallbackQuery"
            and call.status == 200
            and call.params.get("callback_query_id") in sent
        }

    await telegram.wait_for(lambda: len(answered()) == len(sent), ANSWER_TIMEOUT)
    return [
        Sample(at - sent[query][0], sent[query][1] in APPROVER_IDS)
        for query, at in answered().items()
    ]


@contextlib.contextmanager
def no_collection_pauses() -> Iterator[None]:
    """No garbage collection in this process while taps are timed.

    The stand-ins live here, keeping every call and message they served, and a full collection
    of that heap took 110-150 ms: an answer the stand-in records during it looks that much later,
    for whichever bot is being timed then. Collected and frozen before the taps, so that the
    collector has little to look at when it runs again after them.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def timeline_commands(target: Target, count: int) -> Callable[[], Awaitable[list[float]]]:
    """Sends ``count`` /timeline commands; returns a wait for opsgate's answers to them."""
    user = target.telegram.user(ALICE, "alice")
    sent = [
        (
            target.telegram.send_text(CHAT_ID, user, f"/timeline {target.timeline_incident}"),
            time.time(),
        )
        for _ in range(count)
    ]

    async def answers() -> list[float]:
        if target.name != "opsgate":
            return []
        latencies = []
        for command, at in sent:

            def answered(command: FakeMessage = command) -> bool:
                return reply_to(target, command) is not None

            await target.telegram.wait_for(answered, ANSWER_TIMEOUT)
            latencies.append(time.time() - at)
        return latencies

    return answers


def reply_to(target: Target, command: FakeMessage) -> FakeMessage | None:
    return next(
        (
            m
            for m in target.telegram.messages(CHAT_ID)
            if m.from_bot and m.reply_to_message_id == command.message_id
        ),
        None,
    )


def opsgate_cards(telegram: FakeTelegram) -> list[FakeMessage]:
    return [
        m
        for m in telegram.messages(CHAT_ID)
        if m.from_bot and m.reply_to_message_id is None and approve_data(m) is not None
    ]


def approve_data(card: FakeMessage) -> str | None:
    return next((d for _t, d in card.buttons if d and d.startswith("v1:ap:")), None)


async def prepare_opsgate(
    target: Target, process: OpsgateProcess, cards: int, events: int, database_url: str
) -> None:
    async with httpx.AsyncClient(
        base_url=process.base_url, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    ) as client:
        for i in range(cards):
            payload = am_payload(f"taps-{i}", alert(f"taps{i}"))
            (await client.post("/webhook/alertmanager", json=payload)).raise_for_status()
    # At the group's 20 messages a minute, edits included.
    await target.telegram.wait_for(
        lambda: len(opsgate_cards(target.telegram)) >= cards, 60 + cards * 6
    )
    for card in opsgate_cards(target.telegram):
        data = approve_data(card)
        assert data is not None
        target.tappable.append((card.message_id, data))
    found = INCIDENT.search(target.telegram.message(CHAT_ID, target.tappable[-1][0]).plain_text)
    assert found is not None, "the card names no incident"
    target.timeline_incident = found.group()
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            for n in range(events):
                timeline.record(session, target.timeline_incident, "note", f"bench event {n}")
    finally:
        await db.dispose()


def prepare_bare(target: Target, cards: int, shape: FakeMessage) -> None:
    """Messages to tap on that look like ``shape``, an opsgate card: Telegram sends the tapped
    message with every tap, so the bare bot receives (and parses) what opsgate receives."""
    user = target.telegram.user(ALICE, "alice")
    for _ in range(cards):
        message = target.telegram.send_text(CHAT_ID, user, "a message to tap on")
        message.text, message.plain_text = shape.text, shape.plain_text
        message.entities = list(shape.entities)
        message.reply_markup = shape.reply_markup
        target.tappable.append((message.message_id, "bare:answer"))


async def run_round(
    target: Target, round_no: int, singles: int, burst: int, commands: int
) -> dict[str, tuple[list[Sample], list[float]]]:
    """Latencies per scenario, and the /timeline answers' latencies."""
    cards = target.tappable[round_no * 3 : round_no * 3 + 3]
    results: dict[str, tuple[list[Sample], list[float]]] = {}
    message_id, data = cards[0]
    await asyncio.sleep(SCENARIO_SETTLE_SECONDS)  # after the last round's bursts
    cpu = cpu_seconds(target.pid)
    single: list[Sample] = []
    for user in tappers(target.telegram, singles):
        with no_collection_pauses():
            single += await tap_and_time(target, message_id, data, [user])
        await asyncio.sleep(SETTLE_SECONDS)
    results["1 tap"] = (single, [])
    cpu = target.spent("1 tap", cpu)
    await asyncio.sleep(SCENARIO_SETTLE_SECONDS)
    cpu = cpu_seconds(target.pid)
    message_id, data = cards[1]
    with no_collection_pauses():
        results["burst"] = (
            await tap_and_time(target, message_id, data, tappers(target.telegram, burst)),
            [],
        )
    cpu = target.spent("burst", cpu)
    await asyncio.sleep(SCENARIO_SETTLE_SECONDS)
    cpu = cpu_seconds(target.pid)
    message_id, data = cards[2]
    with no_collection_pauses():
        answers = await timeline_commands(target, commands)
        during = await tap_and_time(target, message_id, data, tappers(target.telegram, burst))
    results["burst during /timeline"] = (during, await answers())
    target.spent("burst during /timeline", cpu)
    return results


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


async def run(
    rounds: int, singles: int, burst: int, events: int, commands: int, database_url: str | None
) -> None:
    fakes = {name: FakeTelegram() for name in TARGETS}
    kube = FakeKube()
    for telegram in fakes.values():
        await telegram.start()
        telegram.add_chat(CHAT_ID, type="supergroup", title="On-call")
    await kube.start()
    kube.add_deployment("shop", "checkout", replicas=2)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{workdir / 'opsgate.db'}"
        policy_file = workdir / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(bench_policy()))
        env = serve_env(
            fakes["opsgate"],
            kube,
            url,
            workdir,
            # Every prepared card is posted, none goes on the digest: the taps need cards.
            {
                "policy_file": policy_file,
                **PRODUCTION_SETTINGS,
                "cards_per_minute": max(PRODUCTION_SETTINGS["cards_per_minute"], rounds * 3),
            },
        )
        procs = OpsgateProcesses(workdir)
        bare = start_bare_bot(fakes["bare"], workdir / "bare.log")
        try:
            opsgate = await procs.serve(env, name="opsgate")
            await opsgate.wait_healthy()
            await wait_polling(fakes["bare"], bare)
            targets = {
                "opsgate": Target("opsgate", fakes["opsgate"], opsgate.pid),
                "bare": Target("bare", fakes["bare"], bare.pid),
            }
            for target in targets.values():
                target.rss_idle = rss_mib(target.pid)
            await prepare_opsgate(targets["opsgate"], opsgate, rounds * 3, events, url)
            card = fakes["opsgate"].message(CHAT_ID, targets["opsgate"].tappable[0][0])
            prepare_bare(targets["bare"], rounds * 3, card)
            samples: dict[str, dict[str, list[list[Sample]]]] = {
                s: {t: [] for t in TARGETS} for s in SCENARIOS
            }
            timeline_answers: list[float] = []
            for round_no in range(rounds):
                for name in TARGETS:
                    results = await run_round(targets[name], round_no, singles, burst, commands)
                    for scenario, (latencies, answers) in results.items():
                        samples[scenario][name].append(latencies)
                        timeline_answers += answers
            rss_after = {name: rss_mib(t.pid) for name, t in targets.items()}
        finally:
            stop_process(bare)
            await procs.close()
            for telegram in fakes.values():
                await telegram.stop()
            await kube.stop()
    print(
        f"tap -> answerCallbackQuery, {rounds} rounds interleaved opsgate / bare, "
        f"{singles} single taps and bursts of {burst} per round; /timeline of {events} events; "
        f"{url.split(':')[0]}"
    )
    for scenario in SCENARIOS:
        blocks = {t: [[x.seconds for x in b] for b in samples[scenario][t]] for t in TARGETS}
        flat = {t: [x for block in blocks[t] for x in block] for t in TARGETS}
        p99 = {t: percentile(flat[t], 0.99) for t in TARGETS}
        p50 = {t: statistics.median(flat[t]) for t in TARGETS}
        # The pooled p99 is the slowest round's tail; the median round says whether it was one.
        round_p99 = {t: statistics.median(percentile(b, 0.99) for b in blocks[t]) for t in TARGETS}
        print(
            f"{scenario}: p99 opsgate/bare = {p99['opsgate'] / p99['bare']:.2f}x, "
            f"p50 {p50['opsgate'] / p50['bare']:.2f}x, "
            f"median round's p99 {round_p99['opsgate'] / round_p99['bare']:.2f}x"
        )
        for t in TARGETS:
            rounds_p99 = ", ".join(f"{percentile(b, 0.99) * 1000:.0f}" for b in blocks[t])
            cpu_ms = targets[t].cpu[scenario] * 1000 / len(flat[t])
            print(
                f"  {t:<8} n={len(flat[t]):<5} p50 {_ms(p50[t])}  p99 {_ms(p99[t])}"
                f"  max {_ms(max(flat[t]))}  CPU {cpu_ms:5.1f} ms/tap"
                f"  (p99 per round, ms: {rounds_p99})"
            )
        for approver, who in ((True, "approvers"), (False, "strangers")):
            part = [
                x.seconds for b in samples[scenario]["opsgate"] for x in b if x.approver is approver
            ]
            print(
                f"    opsgate, {who:<9} n={len(part):<5} p50 {_ms(statistics.median(part))}"
                f"  p99 {_ms(percentile(part, 0.99))}"
            )
    if timeline_answers:
        print(
            f"/timeline answers (opsgate): n={len(timeline_answers)} "
            f"p50 {_ms(statistics.median(timeline_answers))}  max {_ms(max(timeline_answers))}"
        )
    for name, target in targets.items():
        print(
            f"RSS {name:<8} idle {target.rss_idle:6.1f} MiB"
            f"  after the taps {rss_after[name]:6.1f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--singles", type=int, default=10)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--timeline-events", type=int, default=1000)
    parser.add_argument("--timeline-commands", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if not 0 < args.burst <= 2 * len(APPROVER_IDS) or not 0 < args.singles <= 2 * len(APPROVER_IDS):
        parser.error(f"--burst and --singles must be between 1 and {2 * len(APPROVER_IDS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    asyncio.run(
        run(
            args.rounds,
            args.singles,
            args.burst,
            args.timeline_events,
            args.timeline_commands,
            args.database_url,
        )
    )


if __name__ == "__main__":
    main()
