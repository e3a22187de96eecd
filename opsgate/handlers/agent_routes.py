"""REST for AI agents without MCP: the same gateway calls, under /api/v1/agent/, each
authenticated by the agent's own bearer token (not the API token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from opsgate.services.agent_gateway import (
    MAX_WAIT_SECONDS,
    AgentGateway,
    AgentProposalRequest,
    AgentRefused,
    NotVisible,
)
from opsgate.services.agents import Agent


def agent_router(gateway: AgentGateway) -> APIRouter:
    router = APIRouter(prefix="/api/v1/agent", tags=["agents"])

    def agent(request: Request) -> Agent:
        found = gateway.authenticate(request.headers.get("authorization", ""))
        if found is None:
            raise HTTPException(
                401, "missing or unknown agent token", headers={"WWW-Authenticate": "Bearer"}
            )
        return found

    # A default, not an Annotated alias: with postponed annotations FastAPI resolves names
    # from the module, where a local alias is not found.
    caller_dependency = Depends(agent)

    @router.get("/operations")
    async def operations(caller: Agent = caller_dependency) -> dict[str, Any]:
        """The allowlist, with what this agent may propose."""
        return {"agent": caller.name, "operations": gateway.operations(caller)}

    @router.post("/proposals", status_code=201)
    async def propose(
        body: AgentProposalRequest, caller: Agent = caller_dependency
    ) -> dict[str, Any]:
        """Propose a remediation; 403 with the reason when it is outside the agent's scope
        (nothing is stored, no card is posted)."""
        try:
            proposed = await gateway.propose(caller, body)
        except AgentRefused as exc:
            raise HTTPException(403, str(exc)) from None
        except NotVisible as exc:
            raise HTTPException(404, str(exc)) from None
        return {
            **proposed.approval,
            "superseded": proposed.superseded,
            "unchanged": proposed.unchanged,
        }

    @router.get("/proposals/{approval_id}")
    async def show(
        approval_id: str,
        caller: Agent = caller_dependency,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0,
    ) -> dict[str, Any]:
        """The proposal; with ``wait`` (seconds, at most 60) once it is final or the wait ran
        out (``final`` tells which)."""
        try:
            return await gateway.wait(caller, approval_id, wait)
        except NotVisible as exc:
            raise HTTPException(404, str(exc)) from None

    @router.get("/incidents")
    async def incidents(
        caller: Agent = caller_dependency,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=50)] = 20,
    ) -> dict[str, Any]:
        """Firing incidents in the agent's namespaces, newest first (MCP ``list_incidents``)."""
        return await gateway.incidents(caller, offset, limit)

    @router.get("/incidents/{incident_id}/timeline")
    async def timeline(
        incident_id: str,
        caller: Agent = caller_dependency,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=100)] = 30,
    ) -> dict[str, Any]:
        """An incident's events, newest first (MCP ``get_timeline``); 404 outside the
        agent's namespaces."""
        try:
            return await gateway.timeline(caller, incident_id, offset, limit)
        except NotVisible as exc:
            raise HTTPException(404, str(exc)) from None

    @router.get("/knowledge")
    async def knowledge(
        q: Annotated[str, Query(min_length=1, max_length=500, description="The words.")],
        caller: Agent = caller_dependency,
        limit: Annotated[int, Query(ge=1, le=20)] = 5,
    ) -> dict[str, Any]:
        """Past incident cases that match the words, best first, of the agent's namespaces
        only (MCP ``search_knowledge``)."""
        return {"hits": await gateway.search(caller, q, limit)}

    return router
