"""The "👀 Ack" button: who is on an incident, for the card, the timeline and /incidents.

opsgate sends no reminders of its own about an incident (no repeated pings, no escalation; a
pending approval just closes at its expiry), so an acknowledgement has nothing to stop yet; it
says who is on it, and the first one stays.
"""

from __future__ import annotations

from datetime import UTC

import structlog

from opsgate.services import timeline
from opsgate.services.approvals import Tapper
from opsgate.services.card_taps import TapAnswer, locked_card_incident
from opsgate.services.chat import MessageRef
from opsgate.services.job_kinds import SYNC_CARD, IncidentJob
from opsgate.services.jobs import enqueue
from opsgate.services.policy import AlertPermission
from opsgate.services.policy_source import PolicySource
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import utcnow

log = structlog.get_logger(__name__)


class AckService:
    def __init__(self, db: Database, policy: PolicySource) -> None:
        self._db = db
        self._policy = policy

    async def ack(
        self, incident_id: str, tapper: Tapper, *, origin: MessageRef | None
    ) -> TapAnswer:
        async with self._db.transaction() as session:
            incident = await locked_card_incident(session, incident_id, origin)
            if isinstance(incident, TapAnswer):
                answer = incident
            else:
                decision = self._policy.current().may_handle_alert(
                    tapper.user_id, AlertPermission.ACK, incident.namespace
                )
                if not decision.allowed:
                    answer = TapAnswer(decision.reason, True, incident_id=incident_id)
                elif incident.acked_at is not None:
                    since = incident.acked_at.astimezone(UTC).strftime("%H:%M UTC")
                    answer = TapAnswer(
                        f"{incident.acked_by} is on it already (since {since}).",
                        True,
                        incident_id=incident_id,
                    )
                else:
                    incident.acked_by = tapper.display
                    incident.acked_at = utcnow()
                    timeline.record(
                        session,
                        incident_id,
                        "acknowledged",
                        f"{tapper.display} is on it",
                        actor=tapper.display,
                    )
                    await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident_id))
                    answer = TapAnswer(
                        "👀 Acknowledged: the card says you are on it.",
                        False,
                        changed=True,
                        incident_id=incident_id,
                    )
        log.info(
            "ack_tap",
            incident_id=incident_id,
            user_id=tapper.user_id,
            changed=answer.changed,
            answer=answer.text,
        )
        return answer
