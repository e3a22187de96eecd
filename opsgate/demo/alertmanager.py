"""Just enough of Alertmanager's silence API for the card's 🔕 buttons, on loopback."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from opsgate.sandbox.loopback import LoopbackServer


class SilenceStandIn(LoopbackServer):
    def __init__(self) -> None:
        self.silences: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v2/silences", self._create)
        app.router.add_get("/api/v2/silence/{id}", self._get)
        app.router.add_delete("/api/v2/silence/{id}", self._expire)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the silence stand-in is not started")
        return self._url

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        silence_id = str(uuid.uuid4())
        self.silences[silence_id] = {**body, "id": silence_id, "status": {"state": "active"}}
        return web.json_response({"silenceID": silence_id})

    async def _get(self, request: web.Request) -> web.Response:
        silence = self.silences.get(request.match_info["id"])
        if silence is None:
            return web.json_response({"message": "silence not found"}, status=404)
        return web.json_response(silence)

    async def _expire(self, request: web.Request) -> web.Response:
        silence = self.silences.get(request.match_info["id"])
        if silence is None:
            return web.json_response({"message": "silence not found"}, status=404)
        silence["status"] = {"state": "expired"}
        return web.json_response({})
