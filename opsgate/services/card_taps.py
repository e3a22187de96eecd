"""What the silence and acknowledge taps share: the answer, and which message may be tapped."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.approvals import NOT_HERE
from opsgate.services.chat import MessageRef
from opsgate.services.storage.models import Incident


@dataclass(frozen=True)
class TapAnswer:
    """What the tapper is told (as an alert when ``alert``) and whether anything changed."""

    text: str
    alert: bool
    changed: bool = False
    incident_id: str | None = None


UNKNOWN = TapAnswer("This incident is not known to opsgate any more.", True)


async def locked_card_incident(
    session: AsyncSession, incident_id: str, origin: MessageRef | None
) -> Incident | TapAnswer:
    """The incident, locked, when the tap came from its own card; else what to answer.

    Only the card itself acts: data copied onto another message, or forged, changes nothing.
    """
    incident = await session.scalar(
        select(Incident).where(Incident.id == incident_id).with_for_update(key_share=True)
    )
    if incident is None:
        return UNKNOWN
    if (
        origin is None
        or origin.chat_id != incident.chat_id
        or origin.message_id != incident.message_id
    ):
        return TapAnswer(NOT_HERE, True, incident_id=incident_id)
    return incident
