"""The webhook's inbox: an update Telegram delivered is stored before Telegram hears 200.

Telegram never resends an update it saw acknowledged, so an update held only in memory is
lost when the process dies. Here each update is a durable job: any replica handles it, a
crashed replica's updates are taken over, and taps are never queued behind a chat's messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import select

from opsgate.services.job_kinds import TELEGRAM_UPDATE, JobKind, TelegramUpdateJob
from opsgate.services.jobs import ClaimedJob, enqueue
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Job

log = structlog.get_logger(__name__)

ProcessUpdate = Callable[[dict[str, Any]], Awaitable[None]]


def _chat_of(update: dict[str, Any]) -> int | None:
    for field in ("message", "edited_message", "my_chat_member", "chat_member"):
        body = update.get(field)
        if isinstance(body, dict):
            chat = body.get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                return int(chat["id"])
    return None


class UpdateInbox:
    def __init__(self, db: Database, process: ProcessUpdate) -> None:
        self._db = db
        self._process = process

    async def accept(self, update: dict[str, Any]) -> bool:
        """Store one update; False when it was stored before (Telegram delivered it again)."""
        payload = TelegramUpdateJob(
            update_id=int(update["update_id"]),
            update=update,
            chat_id=_chat_of(update),
            is_tap="callback_query" in update,
        )
        async with self._db.transaction() as session:
            seen = await session.scalar(
                select(Job.id).where(
                    Job.kind == JobKind.TELEGRAM_UPDATE.value,
                    Job.key == TELEGRAM_UPDATE.key(payload),
                )
            )
            if seen is not None:
                log.info("telegram_update_redelivered", update_id=payload.update_id)
                return False
            await enqueue(session, TELEGRAM_UPDATE, payload)
        return True

    async def run_job(self, job: ClaimedJob[TelegramUpdateJob]) -> None:
        await job.lease.ensure()
        await self._process(job.payload.update)
