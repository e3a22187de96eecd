"""Playbooks: a fix that worked and was verified, kept to be proposed again.

A resolved incident whose execution succeeded and verified becomes a draft playbook matching
its alert name and key labels. An admin approves or retires it from chat. Approved playbooks
propose their action on later matching alerts that carry no ``opsgate_action``.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services import timeline
from opsgate.services.job_kinds import IncidentJob
from opsgate.services.jobs import ClaimedJob
from opsgate.services.learning import PlaybookRecord, record_in, signature_of
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Incident, Playbook, utcnow

log = structlog.get_logger(__name__)

KEY_LABELS = ("namespace", "service")
DRAFT, APPROVED, RETIRED = "draft", "approved", "retired"
REQUESTER_PREFIX = "playbook:"


def match_key(incident: Incident) -> str:
    values = {"namespace": incident.namespace, "service": incident.service}
    return ",".join(f"{k}={values[k]}" for k in KEY_LABELS)


def record_text(record: PlaybookRecord | None) -> str:
    if record is None:
        return "no record yet"
    if record.verified_total:
        worked = f"worked {record.verified_success}/{record.verified_total}"
    else:
        worked = f"ran {record.successes}/{record.attempts}"
    return f"{worked}, trust {record.trust:.2f}"


@dataclass(frozen=True)
class PlaybookLine:
    id: int
    alertname: str
    match_key: str
    action: str
    status: str
    record: str


class PlaybookService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def extract(self, job: ClaimedJob[IncidentJob]) -> None:
        """Draft a playbook once the incident is resolved and its fix verified."""
        async with job.lease.transaction() as session:
            incident = await session.get(Incident, job.payload.incident_id)
            if incident is None or incident.status != "resolved":
                return
            verified = await session.scalar(
                select(Approval)
                .join(Execution, Execution.approval_id == Approval.id)
                .where(
                    Approval.incident_id == incident.id,
                    Execution.status == "succeeded",
                    Execution.verification_status == "success",
                )
                .order_by(Execution.finished_at.desc())
                .limit(1)
            )
            if verified is None:
                return
            key = match_key(incident)
            existing = await session.scalar(
                select(Playbook).where(
                    Playbook.alertname == incident.alertname,
                    Playbook.match_key == key,
                    Playbook.action == verified.action,
                )
            )
            if existing is not None:
                return
            now = utcnow()
            playbook = Playbook(
                alertname=incident.alertname,
                match_key=key,
                match_labels={"namespace": incident.namespace, "service": incident.service},
                action=verified.action,
                status=DRAFT,
                source_incident_id=incident.id,
                decided_by="",
                created_at=now,
                updated_at=now,
            )
            session.add(playbook)
            await session.flush()
            timeline.record(
                session,
                incident.id,
                "playbook_drafted",
                f"draft playbook #{playbook.id}: {verified.action} for {incident.alertname}",
            )
        log.info("playbook_drafted", incident_id=incident.id, playbook_id=playbook.id)

    async def find_for(self, session: AsyncSession, incident: Incident) -> Playbook | None:
        return await session.scalar(
            select(Playbook)
            .where(
                Playbook.alertname == incident.alertname,
                Playbook.match_key == match_key(incident),
                Playbook.status == APPROVED,
            )
            .order_by(Playbook.updated_at.desc())
            .limit(1)
        )

    async def listing(self) -> list[PlaybookLine]:
        async with self._db.transaction() as session:
            playbooks = list(
                await session.scalars(
                    select(Playbook).where(Playbook.status != RETIRED).order_by(Playbook.id)
                )
            )
            lines = []
            for p in playbooks:
                labels = {k: str(p.match_labels.get(k, "")) for k in KEY_LABELS}
                sig = signature_of(p.alertname, labels["namespace"], labels["service"])
                record = await record_in(session, sig, p.action)
                lines.append(
                    PlaybookLine(
                        p.id, p.alertname, p.match_key, p.action, p.status, record_text(record)
                    )
                )
        return lines

    async def decide(self, playbook_id: int, approve: bool, who: str) -> str:
        async with self._db.transaction() as session:
            playbook = await session.get(Playbook, playbook_id, with_for_update={"key_share": True})
            if playbook is None:
                return f"No playbook #{playbook_id}."
            wanted = APPROVED if approve else RETIRED
            if playbook.status == wanted:
                return f"Playbook #{playbook_id} is already {wanted}."
            if playbook.status == RETIRED and approve:
                return f"Playbook #{playbook_id} is retired; it cannot come back."
            playbook.status = wanted
            playbook.decided_by = who
            playbook.updated_at = utcnow()
            timeline.record(
                session,
                playbook.source_incident_id,
                f"playbook_{wanted}",
                f"playbook #{playbook_id} {wanted} by {who}",
                actor=who,
            )
        log.info("playbook_decided", playbook_id=playbook_id, status=wanted, by=who)
        return f"Playbook #{playbook_id} is now {wanted}."
