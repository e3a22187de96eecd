"""``/mcp``: the token check in front of the MCP server, which is loaded on first use.

The ``mcp`` SDK and its protocol models cost ~18 MB of a process that may never see an agent,
so this module does not import it: the first request with a known agent token imports
``opsgate.handlers.mcp_server`` (off the event loop), builds the server and starts its session
manager, which then runs until opsgate stops. A policy reloaded with agents needs nothing
more; a process without agents never pays for the SDK.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import structlog

from opsgate.handlers.http_guards import ASGIApp, Receive, Scope, Send, answer
from opsgate.services.agent_gateway import AgentGateway

log = structlog.get_logger(__name__)

MCP_PATH = "/mcp"
# What the SDK's streamable HTTP transport answers there, stateless: POST a JSON-RPC message;
# GET the stream of server-initiated messages (opsgate sends none).
MCP_METHODS = ("POST", "GET")
# Imported by name, so that neither this module nor the app factory imports the SDK.
MCP_SERVER_MODULE = "opsgate.handlers.mcp_server"


@dataclass(frozen=True)
class McpServing:
    """A built MCP server: its ASGI app, and the session manager that must run around it."""

    app: ASGIApp
    sessions: Callable[[], AbstractAsyncContextManager[None]]


class McpUnavailable(Exception):
    """The MCP server could not be built, or opsgate is stopping."""


McpFactory = Callable[[AgentGateway], McpServing]


def load_mcp_factory() -> McpFactory:
    """``mcp_server.serving``, importing the SDK on the first call."""
    factory: McpFactory = importlib.import_module(MCP_SERVER_MODULE).serving
    return factory


class LazyMcp:
    """The MCP server, built on the first request that needs it.

    ``run`` owns the server's session manager (an anyio task group, which must be entered and
    left in one task): the runtime runs it beside the HTTP server and stops it after.
    """

    def __init__(
        self, gateway: AgentGateway, load: Callable[[], McpFactory] = load_mcp_factory
    ) -> None:
        self._gateway = gateway
        self._load = load
        self._wanted = asyncio.Event()
        self._ready: asyncio.Future[ASGIApp] | None = None

    async def app(self) -> ASGIApp:
        """The MCP app, once built and running; raises if it could not be built."""
        self._wanted.set()
        ready = self._future()
        try:
            return await asyncio.shield(ready)
        except asyncio.CancelledError:
            if ready.cancelled():
                raise McpUnavailable("opsgate is stopping") from None
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Build the server when a request wants it, and keep its sessions until ``stop``.

        A failure to build is logged and given to the waiting requests (a 503), never raised
        here: the rest of opsgate keeps serving.
        """
        ready = self._future()
        wanted = asyncio.ensure_future(self._wanted.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({wanted, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wanted.cancel()
            stopped.cancel()
        if stop.is_set():
            ready.cancel()
            return
        try:
            # Importing the SDK builds hundreds of pydantic models: a thread keeps the loop free.
            factory = await asyncio.to_thread(self._load)
            serving = factory(self._gateway)
            async with serving.sessions():
                ready.set_result(serving.app)
                log.info("mcp_server_started")
                await stop.wait()
        except Exception as exc:
            log.exception("mcp_server_failed")
            if not ready.done():
                ready.set_exception(McpUnavailable(f"the MCP server could not start: {exc}"))
        finally:
            ready.cancel()

    def _future(self) -> asyncio.Future[ASGIApp]:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
        return self._ready


class McpDoor:
    """``/mcp`` to the MCP app for a known agent token (else 401); the rest to ``app``."""

    def __init__(self, app: ASGIApp, mcp: LazyMcp, gateway: AgentGateway) -> None:
        self._app = app
        self._mcp = mcp
        self._gateway = gateway

    @property
    def paths(self) -> dict[str, tuple[str, ...]]:
        """What this door answers itself (path: methods), outside the app behind it."""
        return {MCP_PATH: MCP_METHODS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.rstrip("/") != MCP_PATH:
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._gateway.authenticate(headers.get("authorization", "")) is None:
            await answer(
                send, 401, "missing or unknown agent token", {"WWW-Authenticate": "Bearer"}
            )
            return
        try:
            mcp = await self._mcp.app()
        except McpUnavailable as exc:
            await answer(send, 503, str(exc))
            return
        await mcp({**scope, "path": MCP_PATH}, receive, send)
