"""Incidents: one per Alertmanager group or API proposal; alerts upserted; the card follows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services import timeline
from opsgate.services.alertmanager import ACTION_ANNOTATION, RISK_ANNOTATION, AmAlert, AmPayload
from opsgate.services.approvals import APPROVED, PENDING, ApprovalService, Proposal
from opsgate.services.execution import FINAL_STATES
from opsgate.services.ids import new_incident_id
from opsgate.services.job_kinds import EXTRACT_PLAYBOOK, SYNC_CARD, IncidentJob
from opsgate.services.jobs import enqueue
from opsgate.services.learning import AUTO_REQUESTER, record_in, signature
from opsgate.services.operations import OperationRefused
from opsgate.services.playbooks import REQUESTER_PREFIX as PLAYBOOK_REQUESTER
from opsgate.services.playbooks import PlaybookService
from opsgate.services.policy import AutoApproveRule
from opsgate.services.risk import Risk, parse_risk
from opsgate.services.routing import Router
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Alert, Approval, Execution, Incident, utcnow

log = structlog.get_logger(__name__)

SERVICE_LABELS = ("service", "app", "app_kubernetes_io_name", "deployment", "job")


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


@dataclass(frozen=True)
class IngestResult:
    incident_id: str | None
    created: bool
    changed: bool


@dataclass(frozen=True)
class ApiProposal:
    proposal: Proposal
    incident_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    summary: str = ""


@dataclass(frozen=True)
class ProposalResult:
    approval: Approval
    incident_id: str


class IncidentService:
    def __init__(
        self,
        db: Database,
        approvals: ApprovalService,
        *,
        router: Router,
        playbooks: PlaybookService,
        auto_approve: AutoApproveRule,
    ) -> None:
        self._db = db
        self._approvals = approvals
        self._router = router
        self._playbooks = playbooks
        self._auto_approve = auto_approve
        self.last_received_at: datetime | None = None

    async def ingest_alertmanager(self, payload: AmPayload) -> IngestResult:
        self.last_received_at = utcnow()
        try:
            async with self._db.transaction() as session:
                result = await self._ingest(session, payload)
        except IntegrityError:
            # Two first payloads of one new group raced to create its incident; the loser
            # now finds the winner's row and updates it instead.
            async with self._db.transaction() as session:
                result = await self._ingest(session, payload)
        log.info(
            "alertmanager_ingested",
            group_key=payload.groupKey,
            incident_id=result.incident_id,
            created=result.created,
            changed=result.changed,
            alerts=len(payload.alerts),
        )
        return result

    async def _ingest(self, session: AsyncSession, payload: AmPayload) -> IngestResult:
        incident = await session.scalar(
            select(Incident).where(Incident.group_key == payload.groupKey).with_for_update()
        )
        created = incident is None
        if incident is None:
            if not any(a.status == "firing" for a in payload.alerts):
                # A resolve for a group we never saw: nothing to close.
                return IngestResult(None, False, False)
            incident = self._new_incident(payload.groupKey, "alertmanager", payload.commonLabels)
            incident.external_url = payload.externalURL
            session.add(incident)
            await session.flush()
            timeline.record(
                session,
                incident.id,
                "alert_received",
                f"{incident.alertname or 'alert'} firing ({payload.receiver or 'alertmanager'})",
                actor="alertmanager",
            )
        changed = await self._upsert_alerts(session, incident, payload.alerts)
        if created or changed:
            _describe_from(incident, payload)
        was_firing = incident.status == "firing"
        firing = incident.firing_count > 0
        incident.status = "firing" if firing else "resolved"
        if created:
            await self._propose_from_annotations(session, incident, payload)
        elif was_firing and not firing:
            incident.resolved_at = utcnow()
            timeline.record(
                session,
                incident.id,
                "resolved",
                "all alerts of the group resolved",
                actor="alertmanager",
                status="success",
            )
            await self._approvals.cancel_pending(
                session, incident.id, "alert resolved before approval"
            )
            await enqueue(session, EXTRACT_PLAYBOOK, IncidentJob(incident_id=incident.id))
        elif firing and not was_firing:
            incident.resolved_at = None
            timeline.record(
                session,
                incident.id,
                "refired",
                "the group fires again",
                actor="alertmanager",
                status="warning",
            )
            await self._propose_from_annotations(session, incident, payload)
        elif changed:
            timeline.record(
                session,
                incident.id,
                "alerts_updated",
                f"{incident.firing_count} of {incident.alert_count} alerts firing",
                actor="alertmanager",
            )
        if created or changed:
            incident.updated_at = utcnow()
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
        return IngestResult(incident.id, created, created or changed)

    def _new_incident(self, group_key: str, source: str, labels: dict[str, str]) -> Incident:
        now = utcnow()
        route = self._router.route(labels)
        return Incident(
            id=new_incident_id(),
            group_key=group_key,
            source=source,
            status="firing",
            alertname=labels.get("alertname", ""),
            severity=labels.get("severity", ""),
            service=next((labels[k] for k in SERVICE_LABELS if labels.get(k)), ""),
            namespace=labels.get("namespace", ""),
            summary="",
            labels=dict(labels),
            firing_count=0,
            alert_count=0,
            proposed_action="",
            action_refusal="",
            chat_id=route.target.chat_id,
            thread_id=route.target.thread_id,
            result_destinations=list(route.destinations),
            created_at=now,
            updated_at=now,
        )

    async def _upsert_alerts(
        self, session: AsyncSession, incident: Incident, alerts: list[AmAlert]
    ) -> bool:
        existing = {
            a.fingerprint: a
            for a in await session.scalars(select(Alert).where(Alert.incident_id == incident.id))
        }
        changed = False
        for am in alerts:
            key = am.key()
            row = existing.get(key)
            values: dict[str, Any] = {
                "status": am.status,
                "labels": am.labels,
                "annotations": am.annotations,
                "starts_at": am.startsAt,
                "ends_at": am.endsAt,
                "generator_url": am.generatorURL,
            }
            if row is None:
                row = Alert(incident_id=incident.id, fingerprint=key, **values)
                session.add(row)
                existing[key] = row
                changed = True
                continue
            for name, value in values.items():
                if getattr(row, name) != value:
                    setattr(row, name, value)
                    changed = True
        statuses = [a.status for a in existing.values()]
        incident.firing_count = statuses.count("firing")
        incident.alert_count = len(statuses)
        return changed

    async def _propose_from_annotations(
        self, session: AsyncSession, incident: Incident, payload: AmPayload
    ) -> None:
        """The alert's own ``opsgate_action``, else an approved playbook's action."""
        annotations = _first_firing_annotations(payload)
        action = annotations.get(ACTION_ANNOTATION, "").strip()
        requested_by, description = "alertmanager", annotations.get("description", "")
        playbook = None
        if not action:
            playbook = await self._playbooks.find_for(session, incident)
            if playbook is not None:
                action = playbook.action
                requested_by = f"{PLAYBOOK_REQUESTER}{playbook.id}"
                description = f"playbook #{playbook.id}, learned from {playbook.source_incident_id}"
        incident.proposed_action = action
        incident.action_refusal = ""
        if not action or await _has_open_approval(session, incident.id):
            return
        try:
            risk_text = annotations.get(RISK_ANNOTATION, "").strip()
            declared = parse_risk(risk_text) if risk_text else None
            approval = self._approvals.propose(
                session,
                incident,
                Proposal(
                    action=action,
                    requested_by=requested_by,
                    description=description,
                    declared_risk=declared,
                ),
            )
        except (OperationRefused, ValueError) as exc:
            incident.action_refusal = str(exc)
            timeline.record(
                session,
                incident.id,
                "action_refused",
                f"{action!r} refused: {exc}",
                status="warning",
            )
            return
        if playbook is not None:
            await self._maybe_auto_approve(session, incident, approval, playbook.id)

    async def _maybe_auto_approve(
        self, session: AsyncSession, incident: Incident, approval: Approval, playbook_id: int
    ) -> None:
        """Only when switched on, only low risk, only above the trust threshold."""
        rule = self._auto_approve
        if not rule.enabled or approval.risk != Risk.LOW.value:
            return
        record = await record_in(session, signature(incident), approval.action)
        if record is None or record.trust < rule.min_trust:
            return
        approval.requested_by = AUTO_REQUESTER
        note = f"auto-approved by playbook #{playbook_id} (trust {record.trust:.2f})"
        await self._approvals.auto_approve(session, approval, note)

    async def propose_via_api(self, request: ApiProposal) -> ProposalResult:
        """Raises NotFound, Conflict, or OperationRefused (nothing is stored then)."""
        self.last_received_at = utcnow()
        requester = request.proposal.requested_by
        async with self._db.transaction() as session:
            if request.incident_id:
                incident = await session.scalar(
                    select(Incident).where(Incident.id == request.incident_id).with_for_update()
                )
                if incident is None:
                    raise NotFound(f"incident {request.incident_id} does not exist")
                if await _has_open_approval(session, incident.id):
                    raise Conflict(f"incident {incident.id} already has an open approval")
            else:
                incident = self._new_incident(f"api:{uuid.uuid4()}", "api", request.labels)
                incident.summary = request.summary
                incident.firing_count = 1
                incident.alert_count = 1
                session.add(incident)
                await session.flush()
                timeline.record(
                    session,
                    incident.id,
                    "alert_received",
                    f"{incident.alertname or 'incident'} reported by {requester}",
                    actor=requester,
                )
            approval = self._approvals.propose(session, incident, request.proposal)
            incident.proposed_action = request.proposal.action
            incident.action_refusal = ""
            incident.updated_at = utcnow()
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
            incident_id = incident.id
        log.info("approval_proposed", incident_id=incident_id, approval_id=approval.id)
        return ProposalResult(approval, incident_id)


def _first_firing_annotations(payload: AmPayload) -> dict[str, str]:
    for alert in payload.alerts:
        if alert.status == "firing":
            return {**payload.commonAnnotations, **alert.annotations}
    return dict(payload.commonAnnotations)


def _describe_from(incident: Incident, payload: AmPayload) -> None:
    annotations = _first_firing_annotations(payload)
    incident.summary = annotations.get("summary") or annotations.get("description", "")
    labels = payload.commonLabels
    incident.labels = dict(labels)
    incident.severity = labels.get("severity", incident.severity)
    incident.namespace = labels.get("namespace", incident.namespace)


async def _has_open_approval(session: AsyncSession, incident_id: str) -> bool:
    """A pending approval, or an approved one whose execution has not ended yet."""
    found = await session.scalar(
        select(Approval.id)
        .outerjoin(Execution, Execution.approval_id == Approval.id)
        .where(
            Approval.incident_id == incident_id,
            or_(
                Approval.status == PENDING,
                and_(Approval.status == APPROVED, Execution.status.not_in(FINAL_STATES)),
            ),
        )
        .limit(1)
    )
    return found is not None
