"""The HTTP door: the bearer token and the body size are checked before a body is read.

Parsing a body first would let anyone without the token make opsgate read megabytes and answer
with parser details; here such a request gets its 401 (or 413) straight away.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import structlog

from opsgate.services.agents import Agent
from opsgate.services.input_bounds import printable

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# A POST route answered from its whole body: (status, JSON object to send back).
BodyRoute = Callable[[bytes], Awaitable[tuple[int, dict[str, Any]]]]

MAX_BODY_BYTES = 4 * 1024 * 1024
PROTECTED_PREFIXES = ("/webhook/alertmanager", "/api/")
# Under /api/ but for AI agents, whose own tokens the routes check (handlers/agent_routes.py).
AGENT_PREFIX = "/api/v1/agent/"
# GET routes under /api/ that an agent's own token may read as well as the API token; the
# route answers the agent only within its scope (it finds the agent under AGENT_SCOPE_KEY).
AGENT_READABLE = re.compile(r"/api/v1/approvals/[^/]+")
AGENT_SCOPE_KEY = "opsgate.agent"
# The OpenAPI security schemes: which credential a route takes (see ``credentials``).
API_TOKEN = "apiToken"
AGENT_TOKEN = "agentToken"
TELEGRAM_SECRET = "telegramSecret"
# The header Telegram sends with each webhook update, carrying setWebhook's secret_token.
TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def bearer_problem(token: str | None, authorization: str) -> tuple[int, str] | None:
    """Why a request may not pass (status, reason), or None when its token is right."""
    if token is None:
        return 503, "OPSGATE_WEBHOOK_TOKEN is not set; this endpoint is off"
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        return 401, "missing or wrong bearer token"
    return None


class RequestGate:
    """ASGI middleware in front of the FastAPI app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        protected: tuple[str, ...] = PROTECTED_PREFIXES,
        max_body: int = MAX_BODY_BYTES,
        telegram_webhook: tuple[str, str] | None = None,
        body_routes: Mapping[str, BodyRoute] | None = None,
        agent_of: Callable[[str], Agent | None] | None = None,
    ) -> None:
        """``telegram_webhook``: (path, secret) of the Telegram webhook, whose secret header is
        checked here, before its body is read, as the bearer token is for the other routes.

        ``body_routes``: POST paths answered here, once the body is read, rather than by
        ``app``. For the Alertmanager webhook, the hottest route by far: a re-send that
        changes nothing costs little more than its HTTP parsing, and the framework's layers
        (routing, middlewares, request and response objects) would be a good part of it.

        ``agent_of``: the agent an ``Authorization`` header names, if any; with it an agent
        token may also read the ``AGENT_READABLE`` routes.
        """
        self._app = app
        self._agent_of = agent_of
        self._body_routes = dict(body_routes or {})
        self._telegram_webhook = telegram_webhook
        self._token = token
        self._protected = protected
        self._max_body = max_body

    @property
    def body_paths(self) -> tuple[str, ...]:
        """The POST paths answered here rather than by the app."""
        return tuple(self._body_routes)

    def credentials(self, method: str, path: str) -> tuple[str, ...]:
        """The security schemes a request to ``path`` may authenticate with (any one of
        them), as the checks below apply them: what the OpenAPI document declares."""
        if self._telegram_webhook is not None and path == self._telegram_webhook[0]:
            return (TELEGRAM_SECRET,)
        if path.startswith(AGENT_PREFIX):
            return (AGENT_TOKEN,)
        if path.startswith(self._protected):
            if self._agent_readable(method, path):
                return (API_TOKEN, AGENT_TOKEN)
            return (API_TOKEN,)
        return ()

    def _agent_readable(self, method: str, path: str) -> bool:
        return (
            self._agent_of is not None
            and method == "GET"
            and AGENT_READABLE.fullmatch(path) is not None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        reason: str | None = None
        try:
            reason = await self._gate(scope, receive, recording)
        except Exception:
            status = status or 500
            raise
        finally:
            if status >= 400:
                _access_log(scope, status, time.monotonic() - started, reason)

    async def _gate(self, scope: Scope, receive: Receive, send: Send) -> str | None:
        """Pass the request on, or answer it here; returns why it was refused here, if so."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = str(scope.get("path", ""))
        if path.startswith(self._protected) and not path.startswith(AGENT_PREFIX):
            authorization = headers.get("authorization", "")
            problem = bearer_problem(self._token, authorization)
            if problem is not None and self._agent_readable(str(scope.get("method")), path):
                assert self._agent_of is not None
                agent = self._agent_of(authorization)
                if agent is not None:
                    scope[AGENT_SCOPE_KEY] = agent
                    problem = None
            if problem is not None:
                status, reason = problem
                extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
                await answer(send, status, reason, extra)
                return reason
        if self._telegram_webhook is not None and path == self._telegram_webhook[0]:
            given = headers.get(TELEGRAM_SECRET_HEADER.lower(), "")
            if not hmac.compare_digest(given.encode(), self._telegram_webhook[1].encode()):
                reason = "wrong secret token"
                await answer(send, 403, reason)
                return reason
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            return await self._too_large(send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self._max_body:
                return await self._too_large(send)
            if not message.get("more_body", False):
                break
        route = self._body_routes.get(path) if scope.get("method") == "POST" else None
        if route is not None:
            status, content = await route(bytes(body))
            await respond(send, status, content)
            return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self._app(scope, replay, send)
        return None

    async def _too_large(self, send: Send) -> str:
        reason = f"the body is larger than {self._max_body} bytes"
        await answer(send, 413, reason)
        return reason


def _access_log(scope: Scope, status: int, seconds: float, reason: str | None) -> None:
    """One line per refused or failed request: the path only (no query string), never a
    header or the body, so the token cannot end up in the log."""
    client = scope.get("client")
    log.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "http_request_failed" if status >= 500 else "http_request_refused",
        method=printable(str(scope.get("method", ""))),
        path=printable(str(scope.get("path", ""))),
        status=status,
        client=client[0] if client else None,
        duration_ms=round(seconds * 1000, 1),
        **({"reason": reason} if reason else {}),
    )


async def answer(
    send: Send, status: int, reason: str, headers: dict[str, str] | None = None
) -> None:
    await respond(send, status, {"detail": reason}, headers)


async def respond(
    send: Send, status: int, content: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """``content`` as JSON, encoded as FastAPI's ``JSONResponse`` encodes it."""
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
