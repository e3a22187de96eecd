"""The Model Context Protocol door for AI agents (the official ``mcp`` SDK, streamable HTTP).

Thin: every tool authenticates the caller's bearer token as a policy agent and calls one
``AgentGateway`` method. ``mcp_door.McpDoor`` refuses a request without a known agent token
before the SDK sees it; the tools check again, since the SDK runs them away from the HTTP
request. Only ``mcp_door`` imports this module, on the first agent's request.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import ValidationError
from starlette.applications import Starlette

from opsgate.handlers.mcp_door import MCP_PATH, McpServing
from opsgate.services.agent_gateway import (
    AgentGateway,
    AgentProposalRequest,
    AgentRefused,
    Evidence,
    NotVisible,
    StructuredOperation,
)
from opsgate.services.agents import Agent
from opsgate.services.risk import Risk

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)
PROPOSE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)

INSTRUCTIONS = (
    "opsgate gates Kubernetes remediations behind human approval on Telegram. Propose with "
    "propose_remediation (within your scope: list_operations says what you may propose), "
    "then wait_for_decision. You can never approve; the on-call engineers do."
)


# Tool descriptions: what agents read. Not docstrings, which PYTHONOPTIMIZE=2 (the image) drops.
DESCRIPTIONS = {
    "list_operations": (
        "The operations opsgate can run, their parameters and default risk, and which of them "
        "you may propose."
    ),
    "propose_remediation": (
        "Propose one remediation for humans to approve. Give ``action`` (kubectl text) or "
        "``operation``; ``incident_id`` of an open incident, or ``labels`` with an alertname "
        "for a new one. Proposing again for the same incident with another operation replaces "
        "your earlier proposal, and its approvals start from zero."
    ),
    "get_proposal": (
        "A proposal's status, its plan (what the cluster says will change), approvals, "
        "execution result and verification."
    ),
    "wait_for_decision": (
        "Block until the proposal is decided (and, if approved, executed), at most "
        "``timeout_seconds`` (up to 60); ``final`` says whether it was."
    ),
    "list_incidents": "Firing incidents in your namespaces, newest first.",
    "get_timeline": "An incident's events, newest first.",
    "search_knowledge": "Past incident cases in your namespaces that match the words, best first.",
}


def build_mcp(gateway: AgentGateway) -> MCPServer:
    mcp: MCPServer = MCPServer("opsgate", instructions=INSTRUCTIONS)

    def agent_of(ctx: Context) -> Agent:
        headers = ctx.headers or {}
        agent = gateway.authenticate(headers.get("authorization", ""))
        if agent is None:
            raise ToolError("unknown agent token")
        return agent

    @mcp.tool(annotations=READ, description=DESCRIPTIONS["list_operations"])
    async def list_operations(ctx: Context) -> dict[str, Any]:
        agent = agent_of(ctx)
        return {"agent": agent.name, "operations": gateway.operations(agent)}

    @mcp.tool(annotations=PROPOSE, description=DESCRIPTIONS["propose_remediation"])
    async def propose_remediation(
        ctx: Context,
        rationale: str,
        action: str | None = None,
        operation: StructuredOperation | None = None,
        incident_id: str | None = None,
        labels: dict[str, str] | None = None,
        summary: str = "",
        evidence: Evidence | None = None,
        risk: Risk | None = None,
    ) -> dict[str, Any]:
        agent = agent_of(ctx)
        try:
            request = AgentProposalRequest(
                action=action,
                operation=operation,
                incident_id=incident_id,
                labels=labels or {},
                summary=summary,
                rationale=rationale,
                evidence=evidence or Evidence(),
                risk=risk,
            )
        except ValidationError as exc:
            raise ToolError(f"invalid proposal: {_errors(exc)}") from None
        try:
            proposed = await gateway.propose(agent, request)
        except (AgentRefused, NotVisible) as exc:
            raise ToolError(str(exc)) from None
        return {
            **proposed.approval,
            "superseded": proposed.superseded,
            "unchanged": proposed.unchanged,
        }

    @mcp.tool(annotations=READ, description=DESCRIPTIONS["get_proposal"])
    async def get_proposal(ctx: Context, approval_id: str) -> dict[str, Any]:
        try:
            return await gateway.proposal(agent_of(ctx), approval_id)
        except NotVisible as exc:
            raise ToolError(str(exc)) from None

    @mcp.tool(annotations=READ, description=DESCRIPTIONS["wait_for_decision"])
    async def wait_for_decision(
        ctx: Context, approval_id: str, timeout_seconds: float = 30.0
    ) -> dict[str, Any]:
        try:
            return await gateway.wait(agent_of(ctx), approval_id, timeout_seconds)
        except NotVisible as exc:
            raise ToolError(str(exc)) from None

    @mcp.tool(annotations=READ, description=DESCRIPTIONS["list_incidents"])
    async def list_incidents(ctx: Context, offset: int = 0, limit: int = 20) -> dict[str, Any]:
        return await gateway.incidents(agent_of(ctx), offset, limit)

    @mcp.tool(annotations=READ, description=DESCRIPTIONS["get_timeline"])
    async def get_timeline(
        ctx: Context, incident_id: str, offset: int = 0, limit: int = 30
    ) -> dict[str, Any]:
        try:
            return await gateway.timeline(agent_of(ctx), incident_id, offset, limit)
        except NotVisible as exc:
            raise ToolError(str(exc)) from None

    @mcp.tool(annotations=READ, description=DESCRIPTIONS["search_knowledge"])
    async def search_knowledge(ctx: Context, query: str, limit: int = 5) -> dict[str, Any]:
        return {"hits": await gateway.search(agent_of(ctx), query, limit)}

    return mcp


def mcp_app(mcp: MCPServer) -> Starlette:
    # Stateless, JSON answers: any replica can serve any call, and nothing is kept between
    # calls. Bearer tokens guard it, so the SDK's Host-header check (meant for servers
    # without auth on localhost) is off: opsgate is reached by its service name.
    return mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


def serving(gateway: AgentGateway) -> McpServing:
    """The server, its app and its session manager: what ``mcp_door.LazyMcp`` loads."""
    mcp = build_mcp(gateway)
    app = mcp_app(mcp)
    return McpServing(app=app, sessions=mcp.session_manager.run)


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'proposal'}: {e['msg']}" for e in exc.errors()
    )
