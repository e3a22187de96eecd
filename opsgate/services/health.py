"""What /status reports: is each part of opsgate working right now."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from kubernetes_asyncio import client as k8s

from opsgate.services.cards import RefusedCards, refused_cards
from opsgate.services.chats import ChatDirectory, InactiveChat
from opsgate.services.failures import classify
from opsgate.services.jobs import queue_depth
from opsgate.services.kube_client import KubeClient
from opsgate.services.storage.db import Database

CHECK_TIMEOUT = 5.0
# /status names this many refused cards; the rest are counted.
REFUSED_CARDS_SHOWN = 5


@dataclass(frozen=True)
class HealthReport:
    version: str
    uptime_seconds: float
    database: str
    kubernetes: str
    queue_depth: int | None
    last_alert_at: datetime | None
    inactive_chats: list[InactiveChat]
    refused_cards: RefusedCards | None = None


def kube_version_check(kube: KubeClient) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        versions = k8s.VersionApi(await kube.api())
        info = await versions.get_code(_request_timeout=CHECK_TIMEOUT)
        return f"reachable ({info.git_version})"

    return check


class HealthService:
    def __init__(
        self,
        db: Database,
        chats: ChatDirectory,
        *,
        version: str,
        kube_check: Callable[[], Awaitable[str]],
        last_alert: Callable[[], datetime | None],
    ) -> None:
        self._db = db
        self._chats = chats
        self._version = version
        self._kube_check = kube_check
        self._last_alert = last_alert
        self._started = time.monotonic()

    async def report(self) -> HealthReport:
        database, depth, refused = await self._database()
        return HealthReport(
            version=self._version,
            uptime_seconds=time.monotonic() - self._started,
            database=database,
            kubernetes=await self._kubernetes(),
            queue_depth=depth,
            last_alert_at=self._last_alert(),
            inactive_chats=self._chats.inactive(),
            refused_cards=refused,
        )

    async def _database(self) -> tuple[str, int | None, RefusedCards | None]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT), self._db.transaction() as session:
                depth = await queue_depth(session)
                refused = await refused_cards(session, REFUSED_CARDS_SHOWN)
        except Exception as exc:
            return f"unreachable ({type(exc).__name__})", None, None
        return f"ok ({self._db.engine.dialect.name})", depth, refused

    async def _kubernetes(self) -> str:
        try:
            return await self._kube_check()
        except Exception as exc:
            return f"unreachable ({classify(exc).short()})"
