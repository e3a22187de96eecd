"""The HTTP door: the bearer token and the body size are checked before a body is read.

Parsing a body first would let anyone without the token make opsgate read megabytes and answer
with parser details; here such a request gets its 401 (or 413) straight away.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

from opsgate.services.input_bounds import printable

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 4 * 1024 * 1024
PROTECTED_PREFIXES = ("/webhook/alertmanager", "/api/")


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
    ) -> None:
        self._app = app
        self._token = token
        self._protected = protected
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = str(scope.get("path", ""))
        if path.startswith(self._protected):
            problem = bearer_problem(self._token, headers.get("authorization", ""))
            if problem is not None:
                status, reason = problem
                log.info("http_refused", path=printable(path), status=status, reason=reason)
                extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
                await _answer(send, status, reason, extra)
                return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            await self._too_large(send, path)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self._max_body:
                await self._too_large(send, path)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self._app(scope, replay, send)

    async def _too_large(self, send: Send, path: str) -> None:
        log.info("http_refused", path=printable(path), status=413)
        await _answer(send, 413, f"the body is larger than {self._max_body} bytes")


async def _answer(
    send: Send, status: int, reason: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": reason}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
