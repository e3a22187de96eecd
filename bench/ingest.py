"""Webhook ingest throughput: opsgate's HTTP app against a bare endpoint that only parses JSON.

    .venv/bin/python -m bench.ingest [--requests 2000] [--rounds 4] [--database-url URL]
                                     [--client raw|httpx] [--only SCENARIO] [--profile FILE]

Two servers run as subprocesses, each on one loopback socket: opsgate's real HTTP app
(``build_app``'s ``http_app``: the token gate in front of the MCP door and the FastAPI app),
served by uvicorn the way ``Runtime`` serves it, with the Telegram and Kubernetes stand-ins
from opsgate/sandbox, logging JSON at opsgate's default level; and a bare FastAPI+uvicorn
endpoint that parses the body and answers. This process fires the payloads at
concurrency 50, in blocks interleaved A B A B over the rounds, so both see the same machine
noise: first new alert groups, then re-sends of one group that change nothing. It prints
req/s, p50/p99, server CPU per request, the load generator's own CPU share, and the ratio
opsgate/bare. The job runner is not started: what is measured is the HTTP answer, which only
enqueues the card work.

SQLite (a fresh file) by default. For PostgreSQL give a scratch database, e.g.
``createdb -h 127.0.0.1 -U postgres opsgate_bench`` and
``--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/opsgate_bench``; each run uses
new group keys, so a database can be reused, and dropped afterwards.

``--profile FILE`` runs the opsgate server under cProfile and writes its stats to FILE when it
stops (``python -m pstats FILE``); cProfile slows it, so its figures are for where the time
goes, not for the ratio. ``--only new`` or ``--only resend`` fires one scenario.

Figures, not assertions: these machines are shared, so compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from fastapi import FastAPI, Request

from bench.children import cpu_seconds
from opsgate.app import build_app, load_kube_client, migrate_database
from opsgate.handlers.http_guards import ASGIApp
from opsgate.logs import configure_logging
from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.serve import freeze_startup_heap
from opsgate.settings import Settings
from tests.builders import alert, am_payload, policy_source

MAX_REQUESTS = 2000
TOKEN = "bench-webhook-token"
CHAT_ID = -1001234567890
PATH = "/webhook/alertmanager"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
TARGETS = ("opsgate", "bare")


def _uvicorn(app: ASGIApp) -> uvicorn.Server:
    # As Runtime configures it, so both servers pay for the same HTTP stack.
    return uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))


async def _serve_opsgate(sock: socket.socket, database_url: str, workdir: Path) -> None:
    telegram, kube = FakeTelegram(), FakeKube()
    await telegram.start()
    await kube.start()
    telegram.add_chat(CHAT_ID, type="supergroup")
    settings = Settings(
        telegram_token=telegram.token,
        alert_chat_id=CHAT_ID,
        database_url=database_url,
        telegram_api_url=telegram.root_url,
        webhook_token=TOKEN,
        kubeconfig=str(kube.write_kubeconfig(workdir / "kubeconfig")),
        log_format="json",
    )
    configure_logging(settings.log_format, settings.log_level)
    og = build_app(settings, policy=policy_source(), kube=await load_kube_client(settings))
    await migrate_database(og.db)
    # As `opsgate serve` does once the app is built.
    freeze_startup_heap()
    try:
        # The app Runtime serves: the API behind the token and body-size gate and the MCP door.
        await _uvicorn(og.http_app).serve(sockets=[sock])
    finally:
        await og.kube.close()
        await og.http.aclose()
        await og.db.dispose()
        await telegram.stop()
        await kube.stop()


def bare_app() -> FastAPI:
    api = FastAPI(docs_url=None, redoc_url=None)

    @api.post(PATH)
    async def webhook(request: Request) -> dict[str, bool]:
        await request.json()
        return {"ok": True}

    return api


def serve(target: str, fd: int, database_url: str, workdir: Path, profile: Path | None) -> None:
    sock = socket.socket(fileno=fd)
    if target == "opsgate":
        profiler = cProfile.Profile()
        if profile:
            # uvicorn re-raises the SIGTERM it stopped on once it is done: exit, not die.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            profiler.enable()
        try:
            asyncio.run(_serve_opsgate(sock, database_url, workdir))
        finally:
            if profile:
                profiler.disable()
                profiler.dump_stats(profile)
    else:
        asyncio.run(_uvicorn(bare_app()).serve(sockets=[sock]))


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)


def start_server(target: str, database_url: str, workdir: Path, profile: Path | None) -> Server:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    log = (workdir / f"{target}.log").open("wb")
    args = ["--serve", target, "--fd", str(sock.fileno()), "--database-url", database_url]
    args += ["--profile", str(profile)] if profile else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", *args, "--workdir", str(workdir)],
        pass_fds=[sock.fileno()],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sock.close()
    log.close()
    return Server(target, proc, f"http://127.0.0.1:{port}")


async def wait_ready(server: Server, client: httpx.AsyncClient, probe: bytes) -> None:
    """Until the server answers a real webhook (opsgate has migrated by then)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
        try:
            response = await client.post(server.url + PATH, content=probe, headers=HEADERS)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{server.name} did not come up")


@dataclass
class Block:
    seconds: float
    cpu_seconds: float
    # The share of one core this load generator used: near 1.0, it was the bottleneck.
    client_load: float
    latencies: list[float]


@dataclass
class Totals:
    blocks: list[Block] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(len(b.latencies) for b in self.blocks)

    @property
    def rate(self) -> float:
        return self.requests / sum(b.seconds for b in self.blocks)

    def percentile(self, q: float) -> float:
        ordered = sorted(x for b in self.blocks for x in b.latencies)
        return ordered[min(len(ordered) - 1, round(len(ordered) * q))]

    @property
    def cpu_ms(self) -> float:
        return 1000 * sum(b.cpu_seconds for b in self.blocks) / self.requests


class RawConnection:
    """One keep-alive HTTP/1.1 connection that sends prepared bytes and reads the answer.

    The load generator must cost far less than the bare endpoint it measures: httpx's shared
    pool spends about 1 ms of client CPU per request at concurrency 50 here, which caps the
    bare endpoint well below what it serves, so the default client writes the request bytes
    itself (``--client httpx`` runs the same blocks through httpx, for comparison).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        parts = urlsplit(url)
        return cls(*await asyncio.open_connection(parts.hostname, parts.port))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: {HEADERS['Authorization']}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line, *headers = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(
            int(value)
            for name, _, value in (h.partition(b":") for h in headers)
            if name.lower() == b"content-length"
        )
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def fire(server: Server, bodies: list[bytes], concurrency: int, client: str) -> Block:
    latencies: list[float] = []
    pending = iter(bodies)

    async def raw_worker() -> None:
        conn = await RawConnection.open(server.url)
        try:
            for body in pending:
                started = time.perf_counter()
                status, answer = await conn.post(body)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"{server.name}: {status} {answer!r}")
        finally:
            await conn.close()

    async def httpx_worker() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            for body in pending:
                started = time.perf_counter()
                response = await http.post(PATH, content=body, headers=HEADERS)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{server.name}: {response.status_code} {response.text}")

    worker = raw_worker if client == "raw" else httpx_worker
    cpu, own_cpu = server.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return Block(
        seconds, server.cpu_seconds() - cpu, (time.process_time() - own_cpu) / seconds, latencies
    )


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def new_groups(run: str) -> Callable[[int, int], list[bytes]]:
    def make(round_no: int, count: int) -> list[bytes]:
        return [
            _encode(am_payload(f"{run}:{round_no}:{i}", alert(f"{run}{round_no}x{i}")))
            for i in range(count)
        ]

    return make


def resends(body: bytes) -> Callable[[int, int], list[bytes]]:
    return lambda _round, count: [body] * count


def _line(name: str, totals: Totals) -> str:
    load = max(b.client_load for b in totals.blocks)
    return (
        f"  {name:<8} {totals.rate:7.0f} req/s  p50 {totals.percentile(0.5) * 1000:7.1f} ms"
        f"  p99 {totals.percentile(0.99) * 1000:7.1f} ms  server CPU {totals.cpu_ms:5.2f} ms/req"
        f"  client load {load:.0%}"
        f"  (rounds: {', '.join(f'{len(b.latencies) / b.seconds:.0f}' for b in totals.blocks)})"
    )


SCENARIOS = {"new": "new alert groups", "resend": "re-sends of one group"}


async def run(
    requests: int,
    rounds: int,
    concurrency: int,
    database_url: str | None,
    client: str,
    only: str | None = None,
    profile: Path | None = None,
) -> None:
    per_block = requests // rounds
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        servers = {t: start_server(t, url, workdir, profile) for t in TARGETS}
        run_id = uuid.uuid4().hex[:8]
        resent = _encode(am_payload(f"{run_id}:resent", alert(f"{run_id}resent")))
        makers = {"new": new_groups(run_id), "resend": resends(resent)}
        scenarios = {SCENARIOS[k]: m for k, m in makers.items() if only in (None, k)}
        results = {s: {t: Totals() for t in TARGETS} for s in scenarios}
        try:
            async with httpx.AsyncClient(timeout=60) as probe:
                for server in servers.values():
                    await wait_ready(server, probe, resent)
            for round_no in range(rounds):
                for scenario, make in scenarios.items():
                    for target in TARGETS:
                        bodies = make(round_no, per_block)
                        block = await fire(servers[target], bodies, concurrency, client)
                        results[scenario][target].blocks.append(block)
        finally:
            for server in servers.values():
                server.proc.send_signal(signal.SIGTERM)
            for server in servers.values():
                try:
                    server.proc.wait(30)
                except subprocess.TimeoutExpired:
                    server.proc.kill()
    print(
        f"webhook ingest, {per_block * rounds} requests per scenario and server "
        f"({rounds} rounds of {per_block}), concurrency {concurrency}, {url.split(':')[0]}, "
        f"{client} client"
    )
    for scenario, totals in results.items():
        ratio = totals["opsgate"].rate / totals["bare"].rate
        print(f"{scenario}: opsgate/bare = {ratio:.0%}")
        for target in TARGETS:
            print(_line(target, totals[target]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=MAX_REQUESTS)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--only", choices=tuple(SCENARIOS), default=None)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--serve", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.fd, args.database_url, args.workdir, args.profile)
        return
    if not 0 < args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be between 1 and {MAX_REQUESTS}")
    if args.rounds < 1 or args.requests // args.rounds < 1:
        parser.error("--rounds must leave at least one request per round")
    asyncio.run(
        run(
            args.requests,
            args.rounds,
            args.concurrency,
            args.database_url,
            args.client,
            args.only,
            args.profile and args.profile.resolve(),
        )
    )


if __name__ == "__main__":
    main()
