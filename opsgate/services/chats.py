"""What opsgate knows about chats: supergroup migrations and chats that dropped the bot.

A group that becomes a supergroup gets a new id; every stored reference moves with it and
later sends go to the new id directly. A chat that removed or blocked the bot is marked
inactive, shown in /status, and not sent to until it talks to the bot again.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Chat, Incident, utcnow

log = structlog.get_logger(__name__)
MAX_MIGRATION_HOPS = 5


@dataclass(frozen=True)
class InactiveChat:
    chat_id: int
    reason: str


class ChatDirectory:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Both facts change rarely and are read on every send: keep them in memory too.
        self._moved: dict[int, int] = {}
        self._inactive: dict[int, str] = {}

    async def load(self) -> None:
        async with self._db.transaction() as session:
            for chat in await session.scalars(select(Chat)):
                if chat.migrated_to is not None:
                    self._moved[chat.chat_id] = chat.migrated_to
                if not chat.active:
                    self._inactive[chat.chat_id] = chat.inactive_reason

    def resolve(self, chat_id: int) -> int:
        """The chat's current id, following supergroup migrations."""
        for _ in range(MAX_MIGRATION_HOPS):
            if chat_id not in self._moved:
                break
            chat_id = self._moved[chat_id]
        return chat_id

    def inactive_reason(self, chat_id: int) -> str | None:
        return self._inactive.get(chat_id)

    def inactive(self) -> list[InactiveChat]:
        return [InactiveChat(c, r) for c, r in sorted(self._inactive.items())]

    async def migrated(self, old: int, new: int) -> None:
        async with self._db.transaction() as session:
            chat = await _row(session, old)
            chat.migrated_to = new
            chat.updated_at = utcnow()
            await session.execute(
                update(Incident).where(Incident.chat_id == old).values(chat_id=new)
            )
        self._moved[old] = new
        log.warning("chat_migrated", old_chat_id=old, new_chat_id=new)

    async def deactivate(self, chat_id: int, reason: str) -> None:
        async with self._db.transaction() as session:
            chat = await _row(session, chat_id)
            chat.active = False
            chat.inactive_reason = reason
            chat.updated_at = utcnow()
        self._inactive[chat_id] = reason
        log.warning("chat_inactive", chat_id=chat_id, reason=reason)

    async def activate(self, chat_id: int) -> None:
        if chat_id not in self._inactive:
            return
        async with self._db.transaction() as session:
            chat = await _row(session, chat_id)
            chat.active = True
            chat.inactive_reason = ""
            chat.updated_at = utcnow()
        self._inactive.pop(chat_id, None)
        log.info("chat_active_again", chat_id=chat_id)


async def _row(session: AsyncSession, chat_id: int) -> Chat:
    chat = await session.get(Chat, chat_id, with_for_update={"key_share": True})
    if chat is None:
        chat = Chat(chat_id=chat_id, active=True, inactive_reason="", updated_at=utcnow())
        session.add(chat)
    return chat
