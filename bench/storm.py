"""An alert storm through the real Alertmanager: opsgate against Alertmanager's own Telegram.

    .venv/bin/python -m bench.storm [--groups 25] [--chats 1] [--rounds 1] [--group-wait 1]

One Debian ``prometheus-alertmanager`` gets ``--groups`` alert groups at once (one API call),
spread over ``--chats`` chats by a ``team`` label: opsgate routes them by its policy's routes,
Alertmanager by its own. Each round fires a storm for opsgate (``opsgate serve`` as a child
process, SQLite, default flood limits and polling intervals), then the same storm for
Alertmanager's ``telegram_configs`` (``api_url`` pointed at a second stand-in), A B A B.

Both Telegram stand-ins (opsgate/sandbox) enforce the flood limit the stand-in models, per chat:
at most 20 messages (sends and edits) in any 60 seconds, answered 429 with ``retry_after``
beyond it. An incident is visible once a sendMessage or editMessageText carried out in its
chat names it (opsgate: its incident id or alertname, so a card or a digest line;
Alertmanager: its alertname). The minimum is what the stand-in's limit allows after
Alertmanager's ``group_wait``: ``group_wait + (ceil(per chat / 20) - 1) * 60`` s. It prints the
time until every incident is visible and its ratio to the minimum, the median incident,
sendMessage calls, 429s, and incidents lost (never visible within the minimum + 120 s), then
the RSS of opsgate (idle, after the storms) next to a bare python-telegram-bot bot's.
Figures, not assertions: these machines are shared, so compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select

from bench.children import PRODUCTION_SETTINGS, rss_mib, start_bare_bot, stop_process, wait_polling
from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident
from tests.builders import policy_document
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN
from tests.procs import OpsgateProcesses, free_port, serve_env

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TARGETS = ("opsgate", "telegram_configs")
STAND_IN_LIMIT = (20, 60.0)  # messages per chat in any window of this many seconds
GRACE_SECONDS = 120.0
VISIBLE_METHODS = ("sendMessage", "editMessageText")
TOKEN = re.compile(r"StormR\d+G\d{4}|INC-[0-9A-Z]{4,12}")


def chat_ids(chats: int) -> list[int]:
    return [CHAT_ID, *(-1002000000000 - n for n in range(1, chats))]


def team_of(group: int, chats: int) -> str:
    return f"team{group % chats}"


def alertname(round_no: int, group: int) -> str:
    return f"StormR{round_no}G{group:04d}"


def storm_alerts(target: str, round_no: int, groups: int, chats: int) -> list[dict[str, Any]]:
    return [
        {
            "labels": {
                "alertname": alertname(round_no, g),
                "bench": target,
                "team": team_of(g, chats),
                "namespace": "shop",
                "service": "checkout",
                "severity": "critical",
                "pod": f"checkout-{g}",
            },
            "annotations": {
                "summary": "checkout 5xx above 5%",
                "opsgate_action": "kubectl rollout restart deployment/checkout -n shop",
            },
        }
        for g in range(groups)
    ]


def alertmanager_config(
    opsgate_url: str, telegram: FakeTelegram, chats: int, group_wait: float
) -> dict[str, Any]:
    """opsgate's webhook for ``bench=opsgate``; a telegram receiver per team otherwise."""
    ids = chat_ids(chats)
    return {
        "route": {
            "receiver": "opsgate",
            "group_by": ["alertname", "bench"],
            "group_wait": f"{int(group_wait * 1000)}ms",
            # No second notification of a group during the storm.
            "group_interval": "30m",
            "repeat_interval": "10h",
            "routes": [
                {"matchers": ['bench="opsgate"'], "receiver": "opsgate"},
                *(
                    {
                        "matchers": ['bench="telegram_configs"', f'team="team{n}"'],
                        "receiver": f"t{n}",
                    }
                    for n in range(chats)
                ),
            ],
        },
        "receivers": [
            {
                "name": "opsgate",
                "webhook_configs": [
                    {
                        "url": f"{opsgate_url}/webhook/alertmanager",
                        "send_resolved": False,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": WEBHOOK_TOKEN}
                        },
                    }
                ],
            },
            *(
                {
                    "name": f"t{n}",
                    "telegram_configs": [
                        {
                            "api_url": telegram.root_url,
                            "bot_token": telegram.token,
                            "chat_id": ids[n],
                            "parse_mode": "HTML",
                            "message": "{{ .CommonLabels.alertname }} is firing",
                            "send_resolved": False,
                        }
                    ],
                }
                for n in range(chats)
            ),
        ],
    }


def storm_policy(chats: int) -> dict[str, Any]:
    ids = chat_ids(chats)
    routes = [
        {"name": f"team{n}", "match": {"team": f"team{n}"}, "chat_id": ids[n]}
        for n in range(1, chats)
    ]
    document = policy_document()
    if routes:
        document["routes"] = routes
    return document


def minimum_seconds(groups: int, chats: int, group_wait: float) -> float:
    per_chat = math.ceil(groups / chats)
    amount, window = STAND_IN_LIMIT
    return group_wait + (math.ceil(per_chat / amount) - 1) * window


@dataclass
class Storm:
    """What one storm did at one stand-in."""

    started: float
    first_call: int  # index into telegram.calls where this storm's calls begin
    visible_at: dict[str, float] = field(default_factory=dict)  # alertname -> time.time()
    send_calls: int = 0
    refused_429: int = 0
    calls: int = 0
    lost: int = 0

    @property
    def last(self) -> float:
        return max(self.visible_at.values()) - self.started

    @property
    def median(self) -> float:
        return statistics.median(v - self.started for v in self.visible_at.values())


class Watch:
    """Reads a stand-in's calls as they come and notes when each incident first showed."""

    def __init__(self, telegram: FakeTelegram, names: list[str], storm: Storm) -> None:
        self.telegram, self.storm = telegram, storm
        self.tokens = {name: name for name in names}  # an alertname or incident id -> alertname
        self._seen = storm.first_call

    def scan(self, *, from_start: bool = False) -> None:
        calls = self.telegram.calls
        start = self.storm.first_call if from_start else self._seen
        for call in calls[start:]:
            if call.method in VISIBLE_METHODS and call.status == 200:
                for token in TOKEN.findall(str(call.params.get("text", ""))):
                    name = self.tokens.get(token)
                    if name is not None and name not in self.storm.visible_at:
                        self.storm.visible_at[name] = call.at
        self._seen = len(calls)

    def finish(self) -> None:
        # Again from the start: a message may have named an incident id before we knew it.
        self.storm.visible_at.clear()
        self.scan(from_start=True)
        calls = self.telegram.calls[self.storm.first_call :]
        self.storm.calls = len(calls)
        self.storm.send_calls = sum(1 for c in calls if c.method == "sendMessage")
        self.storm.refused_429 = sum(1 for c in calls if c.status == 429)
        self.storm.lost = len(set(self.tokens.values())) - len(self.storm.visible_at)


async def incident_ids(database_url: str, names: list[str]) -> dict[str, str]:
    """alertname -> incident id, once opsgate stored every group (or what it has by then)."""
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            rows = await session.execute(
                select(Incident.alertname, Incident.id).where(Incident.alertname.in_(names))
            )
            return {name: incident for name, incident in rows.all()}
    finally:
        await db.dispose()


async def fire(alertmanager: str, alerts: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=alertmanager, timeout=30) as client:
        (await client.post("/api/v2/alerts", json=alerts)).raise_for_status()


async def run_storm(
    target: str,
    telegram: FakeTelegram,
    alertmanager: str,
    round_no: int,
    groups: int,
    chats: int,
    deadline_seconds: float,
    database_url: str,
) -> Storm:
    names = [alertname(round_no, g) for g in range(groups)]
    storm = Storm(started=time.time(), first_call=len(telegram.calls))
    watch = Watch(telegram, names, storm)
    await fire(alertmanager, storm_alerts(target, round_no, groups, chats))
    known: dict[str, str] = {}
    while len(storm.visible_at) < groups and time.time() - storm.started < deadline_seconds:
        await asyncio.sleep(0.5)
        if target == "opsgate" and len(known) < groups:
            known = await incident_ids(database_url, names)
            watch.tokens.update({incident: name for name, incident in known.items()})
        watch.scan()
    watch.finish()
    return storm


def spawn_alertmanager(config: Path, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    assert BINARY is not None, "prometheus-alertmanager is not installed"
    with (workdir / "alertmanager.log").open("wb") as log:
        return subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.path={workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def start_alertmanager(config: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = spawn_alertmanager(config, workdir, port)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"{base}/-/ready")).status_code == 200:
                    return process, base
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    stop_process(process)
    raise RuntimeError("alertmanager did not become ready")


def _line(name: str, storm: Storm, minimum: float, groups: int) -> str:
    if len(storm.visible_at) == groups:
        shown = f"all visible {storm.last:6.1f} s ({storm.last / minimum:.2f}x the minimum)"
    else:
        shown = f"{len(storm.visible_at)}/{groups} visible"
    median = f"median {storm.median:6.1f} s" if storm.visible_at else "median -"
    return (
        f"  {name:<17} {shown}  {median}  sendMessage {storm.send_calls:5}"
        f"  429s {storm.refused_429:5} of {storm.calls:5} calls  lost {storm.lost}"
    )


async def run(groups: int, chats: int, rounds: int, group_wait: float) -> None:
    fakes = {name: FakeTelegram() for name in TARGETS}
    kube = FakeKube()
    for telegram in fakes.values():
        await telegram.start()
        for n, chat_id in enumerate(chat_ids(chats)):
            telegram.add_chat(chat_id, type="supergroup", title=f"team{n}")
        telegram.set_chat_rate_limit(*STAND_IN_LIMIT)
    await kube.start()
    kube.add_deployment("shop", "checkout", replicas=2)
    minimum = minimum_seconds(groups, chats, group_wait)
    results: dict[str, list[Storm]] = {t: [] for t in TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = f"sqlite+aiosqlite:///{workdir / 'opsgate.db'}"
        policy_file = workdir / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(storm_policy(chats)))
        env = serve_env(
            fakes["opsgate"],
            kube,
            url,
            workdir,
            {"policy_file": policy_file, **PRODUCTION_SETTINGS},
        )
        procs = OpsgateProcesses(workdir)
        # The bare bot polls the stand-in that Alertmanager only sends to: no one else polls it.
        bare = start_bare_bot(fakes["telegram_configs"], workdir / "bare.log")
        alertmanager: subprocess.Popen[bytes] | None = None
        try:
            opsgate = await procs.serve(env, name="opsgate")
            await opsgate.wait_healthy()
            await wait_polling(fakes["telegram_configs"], bare)
            await asyncio.sleep(2)  # past startup's own allocations
            idle = {"opsgate": rss_mib(opsgate.pid), "bare": rss_mib(bare.pid)}
            config = workdir / "alertmanager.yml"
            am_config = alertmanager_config(
                opsgate.base_url, fakes["telegram_configs"], chats, group_wait
            )
            config.write_text(yaml.safe_dump(am_config))
            alertmanager, am_url = await start_alertmanager(config, workdir)
            for round_no in range(rounds):
                for target in TARGETS:
                    storm = await run_storm(
                        target,
                        fakes[target],
                        am_url,
                        round_no,
                        groups,
                        chats,
                        minimum + GRACE_SECONDS,
                        url,
                    )
                    results[target].append(storm)
            after = {"opsgate": rss_mib(opsgate.pid), "bare": rss_mib(bare.pid)}
        finally:
            if alertmanager is not None:
                stop_process(alertmanager)
            stop_process(bare)
            await procs.close()
            for telegram in fakes.values():
                await telegram.stop()
            await kube.stop()
    print(
        f"alert storm: {groups} groups over {chats} chat(s) at once through Alertmanager "
        f"(group_wait {group_wait:g} s), stand-in limit {STAND_IN_LIMIT[0]} messages per chat "
        f"in {STAND_IN_LIMIT[1]:g} s; minimum {minimum:.1f} s; {rounds} round(s), A B A B"
    )
    for round_no in range(rounds):
        storms = {t: results[t][round_no] for t in TARGETS}
        if all(len(s.visible_at) == groups for s in storms.values()):
            ratio = storms["opsgate"].last / storms["telegram_configs"].last
            print(f"round {round_no + 1}: opsgate / telegram_configs = {ratio:.2f}x")
        else:
            print(f"round {round_no + 1}:")
        for target in TARGETS:
            print(_line(target, storms[target], minimum, groups))
    print(
        f"RSS opsgate serve: idle {idle['opsgate']:.1f} MiB, after the storms "
        f"{after['opsgate']:.1f} MiB; bare PTB bot: idle {idle['bare']:.1f} MiB, "
        f"at the end {after['bare']:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=25)
    parser.add_argument("--chats", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--group-wait", type=float, default=1.0)
    args = parser.parse_args()
    if args.groups < 1 or not 1 <= args.chats <= args.groups or args.rounds < 1:
        parser.error("need --groups >= --chats >= 1 and --rounds >= 1")
    if BINARY is None:
        parser.error("needs Debian's prometheus-alertmanager")
    asyncio.run(run(args.groups, args.chats, args.rounds, args.group_wait))


if __name__ == "__main__":
    main()
