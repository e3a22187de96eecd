"""What an AI agent may do, whichever door it comes through (MCP or REST): propose within its
scope, and read. Reads never write; a proposal outside the agent's scope is refused before
anything is stored, with the reason."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select

from opsgate.services.agents import Agent, authenticate
from opsgate.services.approvals import APPROVED, PENDING, Proposal
from opsgate.services.execution import FINAL_STATES, approver_names
from opsgate.services.incidents import ApiProposal, IncidentService
from opsgate.services.input_bounds import check_storable
from opsgate.services.knowledge import KnowledgeService
from opsgate.services.operation_specs import SPECS, Plan, Scope, blast_radius, effective_risk
from opsgate.services.operations import Operation, OperationKind, OperationRefused, parse_operation
from opsgate.services.policy_source import PolicySource
from opsgate.services.queries import IncidentQueries
from opsgate.services.risk import Risk
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Incident, Signature

MAX_WAIT_SECONDS = 60.0
MAX_EVIDENCE_BYTES = 16_384


def operation_catalogue(agent: Agent) -> list[dict[str, Any]]:
    """list_operations: every kind as its spec states it, and whether ``agent`` may propose it."""
    return [
        {
            "kind": kind.value,
            "syntax": spec.syntax,
            # A node belongs to no namespace: the parser refuses one for it.
            "parameters": ["target"]
            + (["namespace"] if spec.scope is Scope.NAMESPACE else [])
            + (["replicas"] if spec.takes_replicas else []),
            "default_risk": spec.default_risk.value,
            "you_may_propose": agent.may_propose_kind(kind)
            and spec.default_risk.rank <= agent.rule.max_risk.rank,
        }
        for kind, spec in SPECS.items()
    ]


class AgentRefused(Exception):
    """The proposal was not stored; ``str(exc)`` says why, for the agent."""


class NotVisible(LookupError):
    """No such thing, or not in the agent's namespaces (the agent cannot tell which)."""


class Evidence(BaseModel):
    """What the agent found, bounded so it fits a card and a database row."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(default="", max_length=4000)
    findings: dict[str, str] = Field(default_factory=dict, max_length=30)
    links: list[str] = Field(default_factory=list, max_length=10)
    logs: list[str] = Field(default_factory=list, max_length=5)

    @field_validator("findings")
    @classmethod
    def _short_findings(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if len(key) > 100 or len(text) > 500:
                raise ValueError("a finding's key is at most 100 characters, its value 500")
        return value

    @field_validator("links")
    @classmethod
    def _web_links(cls, value: list[str]) -> list[str]:
        for link in value:
            if len(link) > 500 or not link.startswith(("http://", "https://")):
                raise ValueError("links are http(s) URLs of at most 500 characters")
        return value

    @field_validator("logs")
    @classmethod
    def _small_logs(cls, value: list[str]) -> list[str]:
        if any(len(excerpt) > 2000 for excerpt in value):
            raise ValueError("a log excerpt is at most 2000 characters")
        return value


class StructuredOperation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: OperationKind
    target_kind: str = Field(default="deployment", max_length=32)
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)
    replicas: int | None = Field(default=None, ge=0, le=10_000)


class AgentProposalRequest(BaseModel):
    """A proposal from an agent: an action (kubectl text) or a structured operation."""

    model_config = ConfigDict(extra="forbid")

    action: str | None = Field(default=None, min_length=1, max_length=500)
    operation: StructuredOperation | None = None
    incident_id: str | None = Field(default=None, max_length=16)
    labels: dict[str, str] = Field(default_factory=dict, max_length=50)
    summary: str = Field(default="", max_length=1000)
    rationale: str = Field(default="", max_length=2000)
    evidence: Evidence = Field(default_factory=Evidence)
    risk: Risk | None = None

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        check_storable(data)
        return data

    @model_validator(mode="after")
    def _complete(self) -> AgentProposalRequest:
        if (self.action is None) == (self.operation is None):
            raise ValueError("give exactly one of action and operation")
        if not self.incident_id and not self.labels.get("alertname"):
            raise ValueError("give either incident_id or labels with an alertname")
        stored = {"rationale": self.rationale, **self.evidence.model_dump()}
        if len(json.dumps(stored)) > MAX_EVIDENCE_BYTES:
            raise ValueError(f"rationale and evidence exceed {MAX_EVIDENCE_BYTES} bytes of JSON")
        return self

    def action_text(self) -> str:
        if self.action is not None:
            return self.action
        assert self.operation is not None
        op = self.operation
        return Operation(op.kind, op.target_kind, op.name, op.namespace, op.replicas).describe()


@dataclass(frozen=True)
class Proposed:
    approval: dict[str, Any]
    superseded: str | None
    unchanged: bool


class AgentGateway:
    def __init__(
        self,
        db: Database,
        incidents: IncidentService,
        policy: PolicySource,
        knowledge: KnowledgeService,
        queries: IncidentQueries,
        *,
        poll_seconds: float = 0.5,
    ) -> None:
        self._db = db
        self._incidents = incidents
        self._policy = policy
        self._knowledge = knowledge
        self._queries = queries
        self._poll = poll_seconds

    def authenticate(self, authorization: str) -> Agent | None:
        """By the policy in force, so a reload adds, removes or re-scopes agents at once."""
        return authenticate(self._policy.current().agents, authorization)

    def operations(self, agent: Agent) -> list[dict[str, Any]]:
        return operation_catalogue(agent)

    async def propose(self, agent: Agent, request: AgentProposalRequest) -> Proposed:
        """Raises AgentRefused (nothing stored), or NotVisible for an unknown incident."""
        namespace = request.labels.get("namespace") or "default"
        if request.incident_id:
            async with self._db.read() as session:
                incident = await session.get(Incident, request.incident_id)
            if incident is None or not agent.may_see(incident.namespace or "default"):
                raise NotVisible(f"incident {request.incident_id} is not visible to you")
            namespace = incident.namespace or "default"
        action = request.action_text()
        try:
            op = parse_operation(action, default_namespace=namespace)
        except OperationRefused as exc:
            raise AgentRefused(f"action refused: {exc}") from None
        problem = agent.scope_problem(op, effective_risk(op, request.risk))
        if problem is not None:
            raise AgentRefused(f"outside your scope: {problem}")
        labels = dict(request.labels)
        if request.incident_id is None:
            labels.setdefault("namespace", namespace)
        evidence = {"rationale": request.rationale, **request.evidence.model_dump()}
        try:
            result = await self._incidents.propose_via_api(
                ApiProposal(
                    proposal=Proposal(
                        action=action,
                        requested_by=agent.requester,
                        description=request.rationale,
                        declared_risk=request.risk,
                        evidence=evidence,
                        agent=agent.name,
                    ),
                    incident_id=request.incident_id,
                    labels=labels,
                    summary=request.summary,
                )
            )
        except OperationRefused as exc:
            raise AgentRefused(f"action refused: {exc}") from None
        shown = await self.proposal(agent, result.approval.id)
        # Whichever door answers: a repeat's new reasons are taken, and the agent is told so.
        shown["evidence_updated"] = result.evidence_updated
        return Proposed(shown, result.superseded, result.unchanged)

    async def proposal(self, agent: Agent | None, approval_id: str) -> dict[str, Any]:
        """As an agent sees it; ``agent`` None for a holder of the API token, who sees all."""
        async with self._db.read() as session:
            approval = await session.get(Approval, approval_id)
            if approval is None or (agent is not None and not _visible(agent, approval)):
                raise NotVisible(f"approval {approval_id} is not visible to you")
            execution = await session.get(Execution, approval_id)
            signers = await approver_names(session, approval_id)
            lapsed = await approver_names(session, approval_id, lapsed=True)
            rejected_by = await session.scalar(
                select(Signature.username).where(
                    Signature.approval_id == approval_id, Signature.decision == "reject"
                )
            )
        return _describe(approval, execution, signers, lapsed, rejected_by)

    async def wait(self, agent: Agent | None, approval_id: str, seconds: float) -> dict[str, Any]:
        """The proposal once decided (and, if approved, once its execution ended), or as it
        is after ``seconds`` (at most a minute): ``final`` tells which."""
        deadline = time.monotonic() + max(0.0, min(seconds, MAX_WAIT_SECONDS))
        while True:
            shown = await self.proposal(agent, approval_id)
            if shown["final"] or time.monotonic() >= deadline:
                return shown
            await asyncio.sleep(min(self._poll, max(0.0, deadline - time.monotonic())))

    async def incidents(self, agent: Agent, offset: int, limit: int) -> dict[str, Any]:
        # Scoped in the query, so the total and the pages count only what the agent may see.
        page = await self._queries.open_incidents(
            max(0, offset), max(1, min(limit, 50)), namespaces=agent.visible_namespaces()
        )
        return {
            "total": page.total,
            "offset": page.offset,
            "incidents": [
                {
                    "id": row.id,
                    "severity": row.severity,
                    "alertname": row.alertname,
                    "service": row.service,
                    "namespace": row.namespace,
                    "created_at": row.created_at.isoformat(),
                    "approval": row.approval,
                }
                for row in page.rows
            ],
        }

    async def timeline(
        self, agent: Agent, incident_id: str, offset: int, limit: int
    ) -> dict[str, Any]:
        async with self._db.read() as session:
            incident = await session.get(Incident, incident_id)
        if incident is None or not agent.may_see(incident.namespace or "default"):
            raise NotVisible(f"incident {incident_id} is not visible to you")
        page = await self._queries.timeline(incident_id, max(0, offset), max(1, min(limit, 100)))
        assert page is not None
        return {
            "incident_id": incident_id,
            "total": page.total,
            "offset": page.offset,
            "events": [
                {
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "kind": e.kind,
                    "status": e.status,
                    "summary": e.summary,
                }
                for e in page.events
            ],
        }

    async def search(self, agent: Agent, words: str, limit: int) -> list[dict[str, Any]]:
        """Cases of incidents in the agent's namespaces only, as with incidents and timelines."""
        hits = await self._knowledge.search(
            words[:500],
            max(1, min(limit, 20)),
            count_reference=False,
            namespaces=agent.visible_namespaces(),
        )
        return [
            {
                "incident_id": h.incident_id,
                "title": h.title,
                "snippet": h.snippet,
                "status": h.status,
            }
            for h in hits
        ]


def _visible(agent: Agent, approval: Approval) -> bool:
    if approval.agent == agent.name:
        return True
    namespace = approval.operation.get("namespace")
    return agent.may_see(namespace) if namespace else agent.may_see("*")


def _describe(
    approval: Approval,
    execution: Execution | None,
    signers: list[str],
    lapsed: list[str],
    rejected_by: str | None,
) -> dict[str, Any]:
    running = execution is not None and execution.status not in FINAL_STATES
    final = approval.status != PENDING and not (approval.status == APPROVED and running)
    op = Operation.from_dict(approval.operation)
    plan = Plan.from_dict(approval.plan) if approval.plan else None
    return {
        "approval_id": approval.id,
        "incident_id": approval.incident_id,
        "status": approval.status,
        "final": final,
        "action": approval.action,
        "operation": approval.operation,
        "operation_digest": approval.operation_digest,
        "blast_radius": blast_radius(op),
        # What the cluster said the change will do; None until the plan was read.
        "plan": None
        if plan is None
        else {"state": plan.state.value, "summary": plan.summary, "warnings": list(plan.warnings)},
        "risk": approval.risk,
        "proposed_by": approval.requested_by,
        "agent": approval.agent,
        "required_approvals": approval.required_approvals,
        "approvals": signers,
        "no_longer_counted": lapsed,
        "rejected_by": f"@{rejected_by}" if rejected_by else None,
        "decision_note": approval.decision_note,
        "created_at": approval.created_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "execution": None
        if execution is None
        else {
            "status": execution.status,
            "attempts": execution.attempts,
            "result": execution.result_detail,
            "last_error": execution.last_error,
            "verification": execution.verification_status,
            "verification_detail": execution.verification_detail,
        },
    }
