"""The Kubernetes API client, built the first time opsgate talks to the cluster.

kubernetes-asyncio's ``ApiClient`` brings its HTTP stack (aiohttp), its TLS context and the API
modules: ~10 MB of resident memory in a process that can wait days for its first action. So
serve checks its Kubernetes settings when it starts (app.load_kube_client) and builds the
client only when an execution, a plan or /status first needs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

log = structlog.get_logger(__name__)


class KubeClient:
    def __init__(self, connect: Callable[[], Awaitable[ApiClient]]) -> None:
        """``connect`` builds the client; if it raises, the next use calls it again."""
        self._connect = connect
        self._client: ApiClient | None = None
        self._lock = asyncio.Lock()

    async def api(self) -> ApiClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._connect()
                    log.info("kube_client_built")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
