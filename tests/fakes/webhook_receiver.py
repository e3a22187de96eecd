"""Loopback HTTP receivers for notifier tests: one that accepts, one that fails, one that hangs."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from opsgate.sandbox.loopback import LoopbackServer


@dataclass
class Received:
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class WebhookReceiver(LoopbackServer):
    """``/ok/<name>`` answers 200, ``/fail/<name>`` 500, ``/slow/<name>`` after ``slow_seconds``."""

    slow_seconds: float = 30.0
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{mode}/{name}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, mode: str, name: str) -> str:
        assert self._port is not None, "receiver not started"
        return f"http://127.0.0.1:{self._port}/{mode}/{name}"

    def bodies(self, mode: str, name: str) -> list[Any]:
        return [r.body for r in self.received if r.path == f"/{mode}/{name}"]

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read() or b"null")
        self.received.append(Received(request.path, body, dict(request.headers)))
        mode = request.match_info["mode"]
        if mode == "fail":
            return web.json_response({"error": "down"}, status=500)
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        return web.json_response({"ok": True})
