"""The end-to-end rig: opsgate's real runtime against the Telegram and Kubernetes stand-ins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from opsgate.app import Runtime, build_app, load_kube_client
from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage, FakeTelegram
from opsgate.services.policy import Policy
from opsgate.services.policy_source import PolicySource
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident
from opsgate.services.storage.schema_upgrade import upgrade_schema
from opsgate.settings import Settings

CHAT_ID = -1001234567890
WEBHOOK_TOKEN = "test-webhook-token"


def stand_in_settings(
    telegram: FakeTelegram, kube: FakeKube, database_url: str, workdir: Path
) -> dict[str, Any]:
    """Settings for an opsgate that talks to the stand-ins, fast enough for tests."""
    return {
        "telegram_token": telegram.token,
        "alert_chat_id": CHAT_ID,
        "database_url": database_url,
        "http_host": "127.0.0.1",
        "telegram_api_url": telegram.root_url,
        "webhook_token": WEBHOOK_TOKEN,
        "kubeconfig": str(kube.write_kubeconfig(workdir / "kubeconfig")),
        "kube_request_timeout": 2.0,
        "retry_max": 2,
        "retry_delay_seconds": 0.3,
        "plan_retry_seconds": 0.3,
        "job_poll_interval": 0.05,
        "approval_sweep_seconds": 0.2,
        "telegram_chat_rate_per_second": 10_000,
        "telegram_group_rate_per_minute": 10_000,
        "telegram_overall_rate_per_second": 10_000,
        "cards_per_minute": 10_000,
    }


@dataclass
class Rig:
    telegram: FakeTelegram
    kube: FakeKube
    policy: Policy
    tmp_path: Path
    database_url: str
    overrides: dict[str, Any] = field(default_factory=dict)
    runtime: Runtime | None = None
    task: asyncio.Task[None] | None = None
    http: httpx.AsyncClient | None = None

    def settings(self) -> Settings:
        values = stand_in_settings(self.telegram, self.kube, self.database_url, self.tmp_path)
        values.update({"http_port": 0, "log_format": "console"})
        values.update(self.overrides)
        return Settings(**values)

    async def start(self) -> None:
        settings = self.settings()
        # Here rather than in the child process serve would start for an empty database:
        # Alembic is loaded in this process anyway, and a child per test costs a second.
        # tests/multiprocess and tests/unit/test_migrate_errors.py cover serve's own way.
        db = Database(settings.database_url)
        try:
            await upgrade_schema(db)
        finally:
            await db.dispose()
        kube = await load_kube_client(settings)
        self.runtime = Runtime(build_app(settings, policy=PolicySource(self.policy), kube=kube))
        self.task = asyncio.create_task(self.runtime.run())
        started = asyncio.create_task(self.runtime.started.wait())
        done, _ = await asyncio.wait(
            {started, self.task}, timeout=20, return_when=asyncio.FIRST_COMPLETED
        )
        if self.task in done:
            started.cancel()
            failed, self.task, self.runtime = self.task, None, None
            failed.result()
        assert started in done, "opsgate did not start"
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.runtime.port}",
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            timeout=10,
        )

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.runtime is not None and self.task is not None:
            self.runtime.stop.set()
            await asyncio.wait_for(self.task, 30)
        self.runtime = None
        self.task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def client(self) -> httpx.AsyncClient:
        assert self.http is not None
        return self.http

    async def post_alert(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.client.post("/webhook/alertmanager", json=payload)

    def bot_messages(self, chat_id: int = CHAT_ID) -> list[FakeMessage]:
        return [m for m in self.telegram.messages(chat_id) if m.from_bot]

    async def wait_card(self, chat_id: int = CHAT_ID, timeout: float = 10) -> FakeMessage:
        """The first card, once Telegram shows it and opsgate has stored where it is."""
        await self.telegram.wait_for(lambda: bool(self.cards(chat_id)), timeout)
        return await self.stored(self.cards(chat_id)[0], timeout)

    async def stored(self, card: FakeMessage, timeout: float = 10) -> FakeMessage:
        """``card`` once opsgate has stored it as its incident's card. Telegram shows a card
        before opsgate has written where it is, and a tap in between is decided before it
        is answered: the answer then is the decision's, not the one given from the card."""
        db = Database(self.database_url)
        try:
            for _ in range(int(timeout / 0.05)):
                async with db.read() as session:
                    stored = await session.scalar(
                        select(Incident.id).where(
                            Incident.chat_id == card.chat_id,
                            Incident.message_id == card.message_id,
                        )
                    )
                if stored is not None:
                    return card
                await asyncio.sleep(0.05)
        finally:
            await db.dispose()
        raise TimeoutError(f"card {card.message_id} was never stored")

    def cards(self, chat_id: int = CHAT_ID) -> list[FakeMessage]:
        return [
            m
            for m in self.bot_messages(chat_id)
            if "Incident" in m.plain_text and m.reply_to_message_id is None
        ]

    async def wait_text(
        self, message_id: int, needle: str, chat_id: int = CHAT_ID, timeout: float = 10
    ) -> FakeMessage:
        await self.telegram.wait_for(
            lambda: needle in self.telegram.message(chat_id, message_id).plain_text, timeout
        )
        return self.telegram.message(chat_id, message_id)

    async def wait_reply(
        self, to_message_id: int, chat_id: int = CHAT_ID, timeout: float = 10
    ) -> FakeMessage:
        def replies() -> list[FakeMessage]:
            return [m for m in self.bot_messages(chat_id) if m.reply_to_message_id == to_message_id]

        await self.telegram.wait_for(lambda: bool(replies()), timeout)
        return replies()[0]

    async def eventually(self, check: Callable[[], bool], timeout: float = 10) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            if loop.time() > deadline:
                raise TimeoutError("condition not reached")
            await asyncio.sleep(0.05)
