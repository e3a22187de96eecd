"""Read-only questions the chat asks about incidents."""

from __future__ import annotations

import re

from sqlalchemy import select

from opsgate.services import timeline
from opsgate.services.chat import TimelineLine
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident

INCIDENT_ID = re.compile(r"^INC-[0-9A-Z]{4,12}$")


class IncidentQueries:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def timeline(self, incident_id: str) -> list[TimelineLine] | None:
        """The incident's events in order, or None when there is no such incident."""
        async with self._db.transaction() as session:
            if await session.get(Incident, incident_id) is None:
                return None
            return await timeline.events(session, incident_id)

    async def incident_for_card(self, chat_id: int, message_id: int) -> str | None:
        async with self._db.transaction() as session:
            found = await session.scalar(
                select(Incident.id).where(
                    Incident.chat_id == chat_id, Incident.message_id == message_id
                )
            )
        return found
