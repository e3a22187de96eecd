"""Incidents: one per Alertmanager group firing, or API proposal; alerts upserted; card follows.

A group that fires again after its incident resolved opens the next incident, linked back.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import structlog
from sqlalchemy import Select, and_, bindparam, insert, or_, select, union_all, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services import timeline
from opsgate.services.alertmanager import ACTION_ANNOTATION, RISK_ANNOTATION, AmAlert, AmPayload
from opsgate.services.approvals import (
    APPROVED,
    PENDING,
    ApprovalService,
    Proposal,
    proposed_together,
)
from opsgate.services.execution import FINAL_STATES
from opsgate.services.ids import new_incident_id
from opsgate.services.job_kinds import EXTRACT_PLAYBOOK, SYNC_CARD, IncidentJob
from opsgate.services.jobs import enqueue, enqueued_together
from opsgate.services.learning import AUTO_REQUESTER, record_in, signature
from opsgate.services.operation_specs import effective_risk
from opsgate.services.operations import Operation, OperationRefused, parse_operation
from opsgate.services.playbooks import REQUESTER_PREFIX as PLAYBOOK_REQUESTER
from opsgate.services.playbooks import PlaybookService
from opsgate.services.policy import AutoApproveRule
from opsgate.services.policy_source import PolicySource
from opsgate.services.risk import Risk, parse_risk
from opsgate.services.routing import Router
from opsgate.services.storage.db import Database, describe_database_error
from opsgate.services.storage.models import (
    Alert,
    Approval,
    Execution,
    Incident,
    utcnow,
)
from opsgate.services.storage.read_batches import ReadBatches
from opsgate.services.storage.write_batches import WriteBatches, WriteInterrupted

log = structlog.get_logger(__name__)

SERVICE_LABELS = ("service", "app", "app_kubernetes_io_name", "deployment", "job")

# What a re-send is compared with: (id, ingest_digest, status, firing_count) of its group's
# latest incident (a resolved one is followed by the next generation on re-fire).
_STORED_COLUMNS = (Incident.id, Incident.ingest_digest, Incident.status, Incident.firing_count)
# Alert rows go in through the table, not the mapped class: they are plain rows, and the
# ORM's bulk layer would only cost time on each.
_ALERTS = Alert.metadata.tables[Alert.__tablename__]
# And a batch's new incidents too, with the one column a refused proposal sets afterwards.
_INCIDENTS = Incident.metadata.tables[Incident.__tablename__]
_SET_REFUSAL = (
    update(_INCIDENTS)
    .where(_INCIDENTS.c.id == bindparam("refused_id"))
    .values(action_refusal=bindparam("refusal"))
)


@functools.cache
def _stored_digests(groups: int) -> Select[tuple[str, str, str | None, str, int]]:
    """One statement for the latest incident of each of ``groups`` group keys (bound as
    ``k0``, ``k1``, ...), keyed by its group key: one index seek per group, however many
    generations a group has had."""
    arms = [
        select(Incident.group_key, *_STORED_COLUMNS)
        .where(Incident.group_key == bindparam(f"k{i}"))
        .order_by(Incident.generation.desc())
        .limit(1)
        .subquery()
        for i in range(groups)
    ]
    if groups == 1:
        return select(*arms[0].c)
    return select(*union_all(*(select(*arm.c) for arm in arms)).subquery().c)


class _Stored(NamedTuple):
    id: str
    ingest_digest: str | None
    status: str
    firing_count: int


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


class NotStored(Exception):
    """The database refused or lost a webhook's write: nothing of it is known to be stored."""


@dataclass(frozen=True)
class IngestResult:
    incident_id: str | None
    created: bool
    changed: bool


@dataclass(frozen=True)
class _Write:
    """A payload that changes what is stored, as the re-send check found its group."""

    payload: AmPayload
    digest: str | None
    new_group: bool


@dataclass(frozen=True)
class _Choice:
    """The action an incident's alerts call for, and on whose word."""

    action: str
    requested_by: str
    description: str
    risk: str
    playbook_id: int | None = None


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
    # The pending approval this one replaced (the same proposer changed the operation).
    superseded: str | None = None
    # The same proposer sent the same operation again: no new approval, the signatures stand.
    unchanged: bool = False
    # ... with another rationale or evidence, which replaced the pending approval's.
    evidence_updated: bool = False


class IncidentService:
    def __init__(
        self,
        db: Database,
        approvals: ApprovalService,
        *,
        router: Router,
        playbooks: PlaybookService,
        policy: PolicySource,
    ) -> None:
        self._db = db
        self._approvals = approvals
        self._router = router
        self._playbooks = playbooks
        self._policy = policy
        self.last_received_at: datetime | None = None
        # Concurrent webhooks that change something commit together: one transaction (and on
        # SQLite one fsync under the write lock) for all the groups that arrived meanwhile.
        self.writes: WriteBatches[_Write, IngestResult] = WriteBatches(
            db, self._write_all, self._write_alone, name="alertmanager"
        )
        # And their re-send checks read together: one statement for the groups that came
        # while the last one was in flight.
        self.stored: ReadBatches[str, _Stored] = ReadBatches(self._read_stored)

    async def ingest_alertmanager(self, payload: AmPayload) -> IngestResult:
        self.last_received_at = utcnow()
        digest = ingest_digest(payload.alerts)
        # Alertmanager re-sends every group on each repeat interval; most of what arrives
        # changes nothing. That is recognised with one read, without the write lock.
        try:
            stored = await self.stored.get(payload.groupKey)
        except SQLAlchemyError as exc:
            reason = describe_database_error(exc)
            log.error("alertmanager_not_checked", group_key=payload.groupKey, error=reason)
            raise NotStored(reason) from exc
        if stored is None and not _any_firing(payload):
            # A resolve for a group we never saw: nothing to close.
            result = IngestResult(None, False, False)
        elif stored is not None and stored.status == "resolved" and not _any_firing(payload):
            # A resolved incident is closed: a resolve sent again leaves its history alone.
            result = IngestResult(stored.id, False, False)
        elif (
            stored is not None
            and digest is not None
            and stored.ingest_digest == digest
            # The write path would settle a status that disagrees with the counts.
            and (stored.status == "firing") == (stored.firing_count > 0)
        ):
            result = IngestResult(stored.id, False, False)
        else:
            try:
                result = await self.writes.submit(_Write(payload, digest, new_group=stored is None))
            except (SQLAlchemyError, WriteInterrupted) as exc:
                reason = describe_database_error(exc)
                log.error("alertmanager_not_stored", group_key=payload.groupKey, error=reason)
                raise NotStored(reason) from exc
        # Most webhooks are re-sends that change nothing: a line for each would cost more
        # than recognising them, and tell an operator nothing. Below DEBUG the event is not
        # even built: structlog would run its processors before the level drops it.
        if result.changed or logging.getLogger(__name__).isEnabledFor(logging.DEBUG):
            (log.info if result.changed else log.debug)(
                "alertmanager_ingested",
                group_key=payload.groupKey,
                incident_id=result.incident_id,
                created=result.created,
                changed=result.changed,
                alerts=len(payload.alerts),
            )
        return result

    async def _read_stored(self, group_keys: Sequence[str]) -> dict[str, _Stored]:
        rows = await self._db.read_rows(
            _stored_digests(len(group_keys)),
            **{f"k{i}": key for i, key in enumerate(group_keys)},
        )
        return {key: _Stored(*rest) for key, *rest in rows}

    async def _write_all(
        self, session: AsyncSession, writes: Sequence[_Write]
    ) -> list[IngestResult]:
        """Several payloads in one transaction, each written as it would be alone.

        New groups first, then the others, each in group key order: two replicas'
        transactions take the locks they share in the same order and never wait for each other
        in a circle. A group's second payload in one batch is written after its first, over
        the first one's rows, as it would have been in the next transaction.
        """
        order = sorted(range(len(writes)), key=lambda i: writes[i].payload.groupKey)
        creates: list[int] = []
        rest: list[int] = []
        seen: set[str] = set()
        for index in order:
            key = writes[index].payload.groupKey
            (creates if writes[index].new_group and key not in seen else rest).append(index)
            seen.add(key)
        results = dict(
            zip(creates, await self._create_all(session, [writes[i] for i in creates]), strict=True)
        )
        for index in rest:
            write = writes[index]
            results[index] = await self._ingest(session, write.payload, write.digest)
        return [results[index] for index in range(len(writes))]

    async def _write_alone(self, write: _Write) -> IngestResult:
        payload, digest = write.payload, write.digest
        try:
            async with self._db.transaction() as session:
                if write.new_group:
                    return await self._create(session, payload, digest)
                return await self._ingest(session, payload, digest)
        except IntegrityError:
            # Two first payloads of one new group raced to create its incident; the loser
            # now finds the winner's row and updates it instead.
            async with self._db.transaction() as session:
                return await self._ingest(session, payload, digest)

    async def _create(
        self,
        session: AsyncSession,
        payload: AmPayload,
        digest: str | None,
        previous: Incident | None = None,
    ) -> IngestResult:
        """A group with no open incident: its rows are inserted, none looked up first.

        ``previous`` is the group's last incident, resolved, when the group fires again.
        Should another request create the same incident meanwhile, the unique (group key,
        generation) refuses this one.
        """
        incident, alerts = self._new_group_incident(payload, digest, previous)
        choice = await self._choose_action(session, incident, payload)
        incident.proposed_action = choice.action
        session.add(incident)
        # First and on its own, with its final values: without relationships the unit of
        # work orders its inserts by class, not by foreign key, and the approval would go
        # before its incident.
        await session.flush()
        await self._follow_new_incident(session, incident, payload, choice, previous)
        # One statement for all the alerts; the ORM would insert them one by one.
        await session.execute(insert(_ALERTS), _alert_inserts(incident.id, alerts))
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
        return IngestResult(incident.id, True, True)

    async def _create_all(
        self, session: AsyncSession, writes: Sequence[_Write]
    ) -> list[IngestResult]:
        """``_create`` for several new groups, with one statement per table for all of them:
        the incidents in one flush, then their approvals, timeline events, plan and card
        jobs, and their alerts. A playbook's proposal that may be approved on the spot is
        the one exception: its approval is flushed with the ORM, as it is alone."""
        if not writes:
            return []
        created: list[tuple[_Write, Incident, dict[str, dict[str, Any]], _Choice]] = []
        for write in writes:
            incident, alerts = self._new_group_incident(write.payload, write.digest)
            choice = await self._choose_action(session, incident, write.payload)
            incident.proposed_action = choice.action
            created.append((write, incident, alerts, choice))
        incidents = [incident for _, incident, _, _ in created]
        # Through the table, before the rows that refer to them: the objects stay out of the
        # session, which would only track each one to insert it and then forget it.
        for rows in _incident_inserts(incidents):
            await session.execute(insert(_INCIDENTS), rows)
        # Their plan and card jobs in one statement per kind, not one per job, and their
        # events and approvals in one statement each, not one by one.
        async with (
            enqueued_together(session),
            timeline.recorded_together(session),
            proposed_together(session),
        ):
            for write, incident, _, choice in created:
                await self._follow_new_incident(session, incident, write.payload, choice)
            for incident in incidents:
                await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
        refused = [
            {"refused_id": i.id, "refusal": i.action_refusal} for i in incidents if i.action_refusal
        ]
        if refused:
            # Found by the proposal, after the insert; an untracked object does not write it.
            await session.execute(_SET_REFUSAL, refused)
        rows = [row for _, i, alerts, _ in created for row in _alert_inserts(i.id, alerts)]
        await session.execute(insert(_ALERTS), rows)
        return [IngestResult(i.id, True, True) for i in incidents]

    def _new_group_incident(
        self, payload: AmPayload, digest: str | None, previous: Incident | None = None
    ) -> tuple[Incident, dict[str, dict[str, Any]]]:
        """The incident a group's first payload opens, with its final values, and its alerts."""
        incident = self._new_incident(payload.groupKey, "alertmanager", payload.commonLabels)
        incident.external_url = payload.externalURL
        if previous is not None:
            incident.generation = previous.generation + 1
            incident.previous_incident_id = previous.id
        alerts = _alert_rows(payload.alerts)
        incident.firing_count = sum(1 for a in alerts.values() if a["status"] == "firing")
        incident.alert_count = len(alerts)
        incident.status = "firing" if incident.firing_count > 0 else "resolved"
        incident.ingest_digest = digest
        _describe_from(incident, payload)
        return incident, alerts

    async def _follow_new_incident(
        self,
        session: AsyncSession,
        incident: Incident,
        payload: AmPayload,
        choice: _Choice,
        previous: Incident | None = None,
    ) -> None:
        """What follows a new incident's insert: its first events and its proposal."""
        timeline.record(
            session,
            incident.id,
            "alert_received",
            f"{incident.alertname or 'alert'} firing ({payload.receiver or 'alertmanager'})",
            actor="alertmanager",
        )
        if previous is not None:
            _link_refire(session, previous, incident)
        if (
            choice.action
            and previous is not None
            and await _has_open_approval(session, previous.id)
        ):
            # The last incident's fix is still running: the group is not offered a second one.
            timeline.record(
                session,
                incident.id,
                "proposal_held",
                f"{previous.id} still runs its fix; nothing proposed",
                status="warning",
            )
        elif choice.action:
            await self._propose(session, incident, choice)

    async def _ingest(
        self, session: AsyncSession, payload: AmPayload, digest: str | None
    ) -> IngestResult:
        incident = await session.scalar(
            select(Incident)
            .where(Incident.group_key == payload.groupKey)
            .order_by(Incident.generation.desc())
            .limit(1)
            .with_for_update(key_share=True)
        )
        if incident is None:
            if not _any_firing(payload):
                return IngestResult(None, False, False)
            return await self._create(session, payload, digest)
        if incident.status == "resolved":
            if not _any_firing(payload):
                return IngestResult(incident.id, False, False)
            # Fired again after it resolved: a new incident and card, down in the chat where
            # it is seen, rather than an edit of the old card far up.
            return await self._create(session, payload, digest, previous=incident)
        changed = await self._upsert_alerts(session, incident, payload.alerts)
        incident.ingest_digest = digest
        if changed:
            _describe_from(incident, payload)
        # Open until every alert of the group resolved; a later firing opens the next one.
        firing = incident.firing_count > 0
        incident.status = "firing" if firing else "resolved"
        if not firing:
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
        elif changed:
            timeline.record(
                session,
                incident.id,
                "alerts_updated",
                f"{incident.firing_count} of {incident.alert_count} alerts firing",
                actor="alertmanager",
            )
        if changed:
            incident.updated_at = utcnow()
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
        return IngestResult(incident.id, False, changed)

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
        added: dict[str, dict[str, Any]] = {}
        changed = False
        for key, values in ((am.key(), _alert_values(am)) for am in alerts):
            row = existing.get(key)
            if row is None:
                added[key] = values
                changed = True
                continue
            for name, value in values.items():
                if getattr(row, name) != value:
                    setattr(row, name, value)
                    changed = True
        if added:
            await session.execute(
                insert(_ALERTS),
                [{"incident_id": incident.id, "fingerprint": k, **v} for k, v in added.items()],
            )
        statuses = [a.status for a in existing.values()] + [a["status"] for a in added.values()]
        incident.firing_count = statuses.count("firing")
        incident.alert_count = len(statuses)
        return changed

    async def _choose_action(
        self, session: AsyncSession, incident: Incident, payload: AmPayload
    ) -> _Choice:
        """The alert's own ``opsgate_action``, else an approved playbook's action."""
        annotations = _first_firing_annotations(payload)
        risk = annotations.get(RISK_ANNOTATION, "").strip()
        action = annotations.get(ACTION_ANNOTATION, "").strip()
        if action:
            return _Choice(action, "alertmanager", annotations.get("description", ""), risk)
        playbook = await self._playbooks.find_for(session, incident)
        if playbook is None:
            return _Choice("", "alertmanager", annotations.get("description", ""), risk)
        return _Choice(
            playbook.action,
            f"{PLAYBOOK_REQUESTER}{playbook.id}",
            f"playbook #{playbook.id}, learned from {playbook.source_incident_id}",
            risk,
            playbook.id,
        )

    async def _propose(self, session: AsyncSession, incident: Incident, choice: _Choice) -> None:
        rule = self._policy.current().auto_approve
        # Only a playbook's proposal may be approved on the spot, and that needs the approval
        # object; any other is a row, which a batch inserts with its neighbours'.
        may_auto_approve = choice.playbook_id is not None and rule.enabled
        try:
            declared = parse_risk(choice.risk) if choice.risk else None
            proposal = Proposal(
                action=choice.action,
                requested_by=choice.requested_by,
                description=choice.description,
                declared_risk=declared,
            )
            if not may_auto_approve:
                await self._approvals.add_proposal(session, incident, proposal)
                return
            approval = await self._approvals.propose(session, incident, proposal)
        except (OperationRefused, ValueError) as exc:
            incident.action_refusal = str(exc)
            timeline.record(
                session,
                incident.id,
                "action_refused",
                f"{choice.action!r} refused: {exc}",
                status="warning",
            )
            return
        if choice.playbook_id is not None:
            await self._maybe_auto_approve(session, incident, approval, choice.playbook_id, rule)

    async def _maybe_auto_approve(
        self,
        session: AsyncSession,
        incident: Incident,
        approval: Approval,
        playbook_id: int,
        rule: AutoApproveRule,
    ) -> None:
        """Only when switched on, only low risk, only above the trust threshold."""
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
        superseded: str | None = None
        async with self._db.transaction() as session:
            if request.incident_id:
                incident = await session.scalar(
                    select(Incident)
                    .where(Incident.id == request.incident_id)
                    .with_for_update(key_share=True)
                )
                if incident is None:
                    raise NotFound(f"incident {request.incident_id} does not exist")
                pending = await session.scalar(
                    select(Approval)
                    .where(Approval.incident_id == incident.id, Approval.status == PENDING)
                    .with_for_update(key_share=True)
                )
                if pending is not None and _same_proposer(pending, request.proposal):
                    op = parse_operation(
                        request.proposal.action, default_namespace=incident.namespace or "default"
                    )
                    risk = effective_risk(op, request.proposal.declared_risk)
                    if op == Operation.from_dict(pending.operation) and risk.value == pending.risk:
                        # The same operation at the same risk: its signatures stand (they are
                        # over the operation and its plan, not the reasons), the reasons are
                        # the latest ones. Another risk may need another quorum: a new one.
                        updated = _update_reasons(session, pending, request.proposal)
                        if updated:
                            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
                        return ProposalResult(
                            pending, incident.id, unchanged=True, evidence_updated=updated
                        )
                    # A changed proposal is a new approval: no signature carries over.
                    await self._approvals.supersede(
                        session,
                        pending,
                        f"replaced by a changed proposal: {op.describe()} at {risk.value} risk",
                    )
                    superseded = pending.id
                elif await _has_open_approval(session, incident.id):
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
            approval = await self._approvals.propose(session, incident, request.proposal)
            incident.proposed_action = request.proposal.action
            incident.action_refusal = ""
            incident.updated_at = utcnow()
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident.id))
            incident_id = incident.id
        log.info(
            "approval_proposed",
            incident_id=incident_id,
            approval_id=approval.id,
            superseded=superseded,
        )
        return ProposalResult(approval, incident_id, superseded=superseded)


def _alert_values(am: AmAlert) -> dict[str, Any]:
    """The columns of an alert's row that a payload writes."""
    return {
        "status": am.status,
        "labels": am.labels,
        "annotations": am.annotations,
        "starts_at": am.startsAt,
        "ends_at": am.endsAt,
        "generator_url": am.generatorURL,
    }


def _incident_inserts(incidents: Sequence[Incident]) -> list[list[dict[str, Any]]]:
    """The rows of incidents never added to a session, grouped by the columns they set (one
    statement each): a column left unset is left to its default, as the ORM leaves it; a
    None would be a JSON null in a JSON column, not the SQL NULL the ORM writes."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for incident in incidents:
        values = {c.key: vars(incident)[c.key] for c in _INCIDENTS.c if c.key in vars(incident)}
        groups.setdefault(tuple(values), []).append(values)
    return list(groups.values())


def _alert_inserts(incident_id: str, alerts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"incident_id": incident_id, "fingerprint": k, **v} for k, v in alerts.items()]


def _alert_rows(alerts: list[AmAlert]) -> dict[str, dict[str, Any]]:
    """By key; of two alerts with one key the later wins, as it does when upserted in turn."""
    return {am.key(): _alert_values(am) for am in alerts}


def ingest_digest(alerts: list[AmAlert]) -> str | None:
    """A digest of what these alerts write: equal digests, equal rows.

    None when two alerts share a key: written in turn, such alerts change their row every
    time, so a repeat of them is never one that changes nothing.
    """
    rows = _alert_rows(alerts)
    if len(rows) != len(alerts):
        return None
    canon = json.dumps(sorted(rows.items()), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _any_firing(payload: AmPayload) -> bool:
    return any(a.status == "firing" for a in payload.alerts)


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


def _link_refire(session: AsyncSession, previous: Incident, incident: Incident) -> None:
    """Both timelines name the other; the old card is left where it is, as it was."""
    timeline.record(
        session,
        incident.id,
        "refired",
        f"the group fires again after {previous.id} resolved",
        actor="alertmanager",
        status="warning",
    )
    timeline.record(
        session,
        previous.id,
        "fired_again",
        f"the group fires again as {incident.id}",
        actor="alertmanager",
        status="warning",
    )


def _update_reasons(session: AsyncSession, approval: Approval, proposal: Proposal) -> bool:
    """The proposal's rationale and evidence on the pending approval; whether they changed."""
    evidence = proposal.evidence or {}
    if (approval.description, approval.evidence) == (proposal.description, evidence):
        return False
    approval.description = proposal.description
    approval.evidence = evidence
    timeline.record(
        session,
        approval.incident_id,
        "evidence_updated",
        f"{proposal.requested_by} sent new evidence for the same operation; "
        "the signatures made so far still count",
        actor=proposal.requested_by,
    )
    return True


def _same_proposer(approval: Approval, proposal: Proposal) -> bool:
    if approval.agent is not None or proposal.agent is not None:
        return approval.agent == proposal.agent
    return approval.requested_by.strip().lower() == proposal.requested_by.strip().lower()


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
