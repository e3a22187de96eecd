"""HTTP routes: the Alertmanager webhook, the approvals API, health, metrics, Telegram webhook."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from opsgate.handlers.http_guards import AGENT_SCOPE_KEY, BodyRoute
from opsgate.services.agent_gateway import MAX_WAIT_SECONDS, AgentGateway, NotVisible
from opsgate.services.agents import Agent
from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import Proposal
from opsgate.services.incidents import (
    ApiProposal,
    Conflict,
    IncidentService,
    NotFound,
    NotStored,
)
from opsgate.services.input_bounds import check_storable, printable
from opsgate.services.operations import OperationRefused
from opsgate.services.policy_reload import PolicyReloader, PolicyState, ReloadRefused
from opsgate.services.risk import Risk
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval

log = structlog.get_logger(__name__)

MAX_EVIDENCE_BYTES = 16_384
TOO_DEEP = "the body is nested too deeply"


class ApprovalRequest(BaseModel):
    """``POST /api/v1/approvals``: another system proposes an action for a human to approve."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=500)
    requested_by: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    risk: Risk | None = None
    incident_id: str | None = Field(default=None, max_length=16)
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = Field(default="", max_length=1000)
    requester_telegram_id: int | None = None
    evidence: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        check_storable(data)
        return data

    @field_validator("evidence")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_EVIDENCE_BYTES:
            raise ValueError(f"evidence is larger than {MAX_EVIDENCE_BYTES} bytes of JSON")
        return value

    @model_validator(mode="after")
    def _names_an_incident(self) -> ApprovalRequest:
        if not self.incident_id and not self.labels.get("alertname"):
            raise ValueError("give either incident_id or labels with an alertname")
        return self


class ApprovalStatus(BaseModel):
    approval_id: str
    incident_id: str
    status: str
    action: str
    risk: str
    required_approvals: int
    expires_at: datetime


class ApprovalState(ApprovalStatus):
    """``GET /api/v1/approvals/{id}``: with the signatures and, once run, the result."""

    # Decided, and if approved its execution ended: a long poll ends early only then.
    final: bool
    approvals: list[str]
    decision_note: str
    execution_status: str | None
    result: str | None
    verification: str | None


ALERTMANAGER_PATH = "/webhook/alertmanager"


def alertmanager_webhook(incidents: IncidentService, on_alert: Callable[[], None]) -> BodyRoute:
    """``POST /webhook/alertmanager`` from its body: what ``RequestGate`` answers with.

    The body is parsed and validated in one pass by pydantic (not JSON to dicts, then
    validation): most webhooks are re-sends, and for them parsing is a good part of the cost.
    """

    async def webhook(body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            payload = AmPayload.model_validate_json(body)
        except ValidationError as exc:
            return 422, {"detail": validation_details(exc.errors(include_input=False))}
        except RecursionError:
            return 422, {"detail": TOO_DEEP}
        on_alert()
        try:
            result = await incidents.ingest_alertmanager(payload)
        except NotStored as exc:
            # Alertmanager sends the group again on a 5xx; a 200 would mean it is stored.
            return 503, {"detail": f"the alerts were not stored: {exc}"}
        return 200, {
            "incident_id": result.incident_id,
            "created": result.created,
            "changed": result.changed,
        }

    return webhook


def ingest_router(
    webhook: BodyRoute, incidents: IncidentService, gateway: AgentGateway
) -> APIRouter:
    """Routes behind the bearer token, which ``http_guards.RequestGate`` checks first."""
    router = APIRouter()

    @router.post(
        ALERTMANAGER_PATH,
        response_class=JSONResponse,
        # The body is read by hand below; the schema still says what it must be.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": inline_schema(AmPayload)}},
            }
        },
    )
    async def alertmanager(request: Request) -> JSONResponse:
        # RequestGate answers this route itself (``body_routes``); this one is for the API
        # document, and for the app served without the gate.
        status, content = await webhook(await request.body())
        return JSONResponse(content, status)

    @router.post("/api/v1/approvals", status_code=201)
    async def propose(body: ApprovalRequest) -> ApprovalStatus:
        request = ApiProposal(
            proposal=Proposal(
                action=body.action,
                requested_by=body.requested_by,
                description=body.description,
                declared_risk=body.risk,
                requester_user_id=body.requester_telegram_id,
                evidence=body.evidence,
            ),
            incident_id=body.incident_id,
            labels=body.labels,
            summary=body.summary,
        )
        try:
            result = await incidents.propose_via_api(request)
        except OperationRefused as exc:
            raise HTTPException(422, f"action refused: {exc}") from None
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from None
        return _status(result.approval)

    @router.get("/api/v1/approvals/{approval_id}")
    async def show(
        approval_id: str,
        request: Request,
        wait: float = Query(
            default=0,
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to wait for the decision (and, if approved, the result).",
        ),
    ) -> ApprovalState:
        """The approval; with ``wait``, answered once it is final or the wait ran out.

        With the API token, any approval; with an agent's token, only one within the agent's
        scope (404 otherwise), as ``/api/v1/agent/proposals/{id}`` answers it."""
        # Set by RequestGate when an agent's token, not the API token, let the request in.
        agent = request.scope.get(AGENT_SCOPE_KEY)
        assert agent is None or isinstance(agent, Agent)
        try:
            shown = await gateway.wait(agent, approval_id, wait)
        except NotVisible:
            raise HTTPException(404, f"approval {approval_id} does not exist") from None
        execution = shown["execution"] or {}
        return ApprovalState(
            approval_id=shown["approval_id"],
            incident_id=shown["incident_id"],
            status=shown["status"],
            action=shown["action"],
            risk=shown["risk"],
            required_approvals=shown["required_approvals"],
            expires_at=datetime.fromisoformat(shown["expires_at"]),
            final=shown["final"],
            approvals=shown["approvals"],
            decision_note=shown["decision_note"],
            execution_status=execution.get("status"),
            result=execution.get("result"),
            verification=execution.get("verification"),
        )

    return router


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` written in place, for an ``openapi_extra``
    (whose references FastAPI does not resolve into the document's components)."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                return resolve(defs[ref.rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _status(approval: Approval) -> ApprovalStatus:
    return ApprovalStatus(
        approval_id=approval.id,
        incident_id=approval.incident_id,
        status=approval.status,
        action=approval.action,
        risk=approval.risk,
        required_approvals=approval.required_approvals,
        expires_at=approval.expires_at,
    )


class PolicyStatus(BaseModel):
    file: str | None
    generation: int
    loaded_at: datetime
    users: int
    roles: int
    routes: int
    notifiers: int


class PendingRechecked(BaseModel):
    checked: int
    resynced: int
    approved: int


class PolicyReloaded(PolicyStatus):
    status: Literal["reloaded"] = "reloaded"
    # None when the database could not be reached for the re-check.
    pending: PendingRechecked | None


def policy_router(reloader: PolicyReloader) -> APIRouter:
    """The policy in force in this process, and its reload; behind the bearer token."""
    router = APIRouter()

    @router.get("/api/v1/policy")
    async def show_policy() -> PolicyStatus:
        return _policy_status(reloader.state())

    @router.post("/api/v1/policy/reload", response_model=None)
    async def reload_policy() -> PolicyReloaded | JSONResponse:
        try:
            done = await reloader.reload("api")
        except ReloadRefused as exc:
            status = 409 if exc.nothing_to_read else 422
            body = {
                "detail": "policy not reloaded; the one in force stays",
                "errors": [printable(line) for line in exc.lines],
            }
            return JSONResponse(body, status)
        pending = done.pending
        return PolicyReloaded(
            **_policy_status(done.state).model_dump(),
            pending=PendingRechecked(
                checked=pending.checked, resynced=pending.resynced, approved=pending.approved
            )
            if pending is not None
            else None,
        )

    return router


def _policy_status(state: PolicyState) -> PolicyStatus:
    return PolicyStatus(
        file=state.file, generation=state.generation, loaded_at=state.loaded_at, **state.sizes
    )


def health_router(
    db: Database,
    registry: CollectorRegistry,
    *,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, Literal["ok"]]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            await db.ping()
        except Exception as exc:
            log.warning("readiness_failed", error=repr(exc))
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @router.get("/metrics")
    async def metrics() -> Response:
        if before_scrape is not None:
            try:
                await before_scrape()
            except Exception as exc:
                # The other figures are still worth having; the queue gauges keep their last.
                log.warning("metrics_refresh_failed", error=repr(exc))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def telegram_webhook_router(
    path: str, deliver: Callable[[dict[str, Any]], Awaitable[object]]
) -> APIRouter:
    """Telegram's pushed updates. The secret header is checked by RequestGate, before the body
    is read."""
    router = APIRouter()

    @router.post(path)
    async def telegram_update(request: Request) -> Response:
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(400, "body is not JSON") from None
        if not isinstance(data, dict) or "update_id" not in data:
            raise HTTPException(400, "body is not a Telegram update")
        await deliver(data)
        return Response(status_code=200)

    return router


def create_api(*routers: APIRouter) -> FastAPI:
    api = FastAPI(title="opsgate", docs_url=None, redoc_url=None)
    for router in routers:
        api.include_router(router)
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(RecursionError, _too_deep)
    return api


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_details(exc.errors())}, status_code=422)


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Say what is wrong without echoing the input: it may be what cannot be encoded."""
    return [
        {
            "loc": [printable(part) for part in error.get("loc", ())],
            "msg": printable(error.get("msg", "invalid")),
        }
        for error in errors
    ]


async def _too_deep(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": TOO_DEEP}, status_code=422)
