"""The demo's page on 127.0.0.1: the chats and the cluster, live, and what a person can do.

Taps and messages go through the Bot API stand-in exactly as a Telegram client's would (a
callback query, a message update); scenarios go through opsgate's Alertmanager webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from importlib.resources import files
from typing import Any

import structlog
from aiohttp import web

from opsgate.demo.scenarios import BY_NAME
from opsgate.demo.session import PERSON, DemoSession
from opsgate.demo.snapshot import snapshot

log = structlog.get_logger(__name__)

STATIC = files("opsgate.demo") / "static"
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# Nothing but the page's own files; no inline script or style, no other origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PUSH_INTERVAL = 0.25
KEEPALIVE_SECONDS = 15.0
ANSWER_WAIT_SECONDS = 5.0


class DemoPage:
    """``async with DemoPage(demo, port=8090) as page``: serves until the block ends."""

    def __init__(self, demo: DemoSession, *, port: int, host: str = "127.0.0.1") -> None:
        self.demo = demo
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    async def __aenter__(self) -> DemoPage:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[_headers], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        app.router.add_post("/api/fire", self._fire)
        app.router.add_post("/api/tap", self._tap)
        app.router.add_post("/api/say", self._say)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(f"--port {self.port}: cannot listen on {self.host}: {exc}") from None
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- reading --------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text=(STATIC / "index.html").read_text(encoding="utf-8"), content_type="text/html"
        )

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            text=(STATIC / name).read_text(encoding="utf-8"), content_type=ASSETS[name]
        )

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(snapshot(self.demo))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the whole state whenever it changed, so a page never reloads."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        last, quiet = "", 0.0
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while not self._closing.is_set():
                state = json.dumps(snapshot(self.demo), ensure_ascii=False)
                if state != last:
                    await response.write(f"data: {state}\n\n".encode())
                    last, quiet = state, 0.0
                elif quiet >= KEEPALIVE_SECONDS:
                    await response.write(b": keep-alive\n\n")
                    quiet = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), PUSH_INTERVAL)
                quiet += PUSH_INTERVAL
        return response

    # -- acting ---------------------------------------------------------------------------------

    async def _fire(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = body.get("scenario")
        if name not in BY_NAME:
            return _refuse(f"no scenario {name!r}")
        # A learned playbook's first incident takes a few seconds; the page follows it live.
        self.demo.start_scenario(name)
        return web.json_response({"fired": name}, status=202)

    async def _tap(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        person, chat_id = self._person_in_chat(body)
        message_id, data = body.get("message_id"), body.get("data")
        if not isinstance(message_id, int) or not isinstance(data, str):
            return _refuse("message_id (integer) and data (string) are required")
        try:
            query = self.demo.tap(person, chat_id, message_id, data)
        except AssertionError as exc:
            # The keyboard changed under the person's finger: an edit removed the button.
            return _refuse(str(exc), status=409)
        try:
            answer = await self.demo.telegram.wait_answer(query, ANSWER_WAIT_SECONDS)
        except TimeoutError:
            return web.json_response({"text": None, "show_alert": False})
        return web.json_response({"text": answer.text, "show_alert": answer.show_alert})

    async def _say(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        person, chat_id = self._person_in_chat(body)
        text, reply_to = body.get("text"), body.get("reply_to")
        if not isinstance(text, str) or not text.strip() or len(text) > 4096:
            return _refuse("text: 1 to 4096 characters")
        if reply_to is not None and not isinstance(reply_to, int):
            return _refuse("reply_to: a message id")
        try:
            message = self.demo.say(person, chat_id, text.strip(), reply_to=reply_to)
        except AssertionError as exc:
            return _refuse(str(exc), status=409)
        return web.json_response({"message_id": message.message_id})

    def _person_in_chat(self, body: dict[str, Any]) -> tuple[str, int]:
        person, chat_id = body.get("person"), body.get("chat_id")
        if person not in PERSON:
            raise web.HTTPBadRequest(text=f"person: one of {sorted(PERSON)}")
        chat = next((c for c in self.demo.chats if c.id == chat_id), None)
        if chat is None or chat.person not in (None, person):
            raise web.HTTPBadRequest(text="chat_id: a group, or the person's own private chat")
        return person, chat.id


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    # A page on loopback is still reachable from any site the browser has open: writes must be
    # JSON from this origin (a cross-site form cannot send that without a preflight we refuse).
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-origin request")
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json")
    response: web.StreamResponse = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object, please")
    return body


def _refuse(reason: str, status: int = 400) -> web.Response:
    return web.json_response({"error": reason}, status=status)
