"""The OpenAPI document: FastAPI's, plus what the doors in front of it serve and check.

``/mcp`` is answered by ``mcp_door.McpDoor`` outside FastAPI, and each route's credential is
checked by ``http_guards.RequestGate`` before FastAPI sees the request: both are added here,
from the doors themselves, so the document says what they do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from opsgate.handlers.http_guards import (
    AGENT_TOKEN,
    API_TOKEN,
    TELEGRAM_SECRET,
    TELEGRAM_SECRET_HEADER,
)
from opsgate.handlers.mcp_door import MCP_PATH

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    API_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "OPSGATE_WEBHOOK_TOKEN: Alertmanager and systems that propose for people.",
    },
    AGENT_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "An AI agent's own token (the policy file's agents.<name>): it may propose within "
            "its namespaces and operations and read what is in them, never approve."
        ),
    },
    TELEGRAM_SECRET: {
        "type": "apiKey",
        "in": "header",
        "name": TELEGRAM_SECRET_HEADER,
        "description": "The secret_token given to Telegram's setWebhook.",
    },
}

_JSON_RPC = {
    "type": "object",
    "description": "A JSON-RPC 2.0 message of the Model Context Protocol.",
    "required": ["jsonrpc"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "integer"]},
        "method": {"type": "string"},
        "params": {"type": "object"},
    },
}
_REFUSED = {
    "401": {"description": "No agent token, or one the policy does not know."},
    "503": {"description": "The MCP server could not start."},
}


def mcp_path_item(methods: tuple[str, ...]) -> dict[str, Any]:
    """``/mcp``: the MCP SDK's streamable HTTP transport, stateless, JSON answers."""
    described = {
        "POST": {
            "summary": "Model Context Protocol (streamable HTTP)",
            "description": (
                "The MCP server for AI agents: tools list_operations, propose_remediation, "
                "get_proposal, wait_for_decision, list_incidents, get_timeline, "
                "search_knowledge. Use an MCP client (streamable HTTP transport) with the "
                "agent's bearer token; each request is answered on its own (stateless)."
            ),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _JSON_RPC}},
            },
            "responses": {
                "200": {
                    "description": "The JSON-RPC answer.",
                    "content": {"application/json": {"schema": _JSON_RPC}},
                },
                "202": {"description": "A notification or response, accepted."},
                **_REFUSED,
            },
        },
        "GET": {
            "summary": "Model Context Protocol: the server's message stream",
            "description": "Server-sent events for server-initiated messages (opsgate sends none).",
            "responses": {
                "200": {"description": "An event stream.", "content": {"text/event-stream": {}}},
                **_REFUSED,
            },
        },
    }
    return {
        method.lower(): {
            **described[method],
            "tags": ["agents"],
            "operationId": f"mcp_{method.lower()}",
            "security": [{AGENT_TOKEN: []}],
        }
        for method in methods
    }


def document(
    api: FastAPI,
    *,
    credentials: Callable[[str, str], tuple[str, ...]],
    door_paths: dict[str, tuple[str, ...]],
) -> None:
    """Make ``api.openapi()`` describe the doors' paths and every route's credentials.

    ``credentials(method, path)``: the schemes the gate accepts there (any one of them).
    """

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = get_openapi(
            title=api.title, version=api.version, description=api.description, routes=api.routes
        )
        paths: dict[str, Any] = schema.setdefault("paths", {})
        for path, methods in door_paths.items():
            if path == MCP_PATH:
                paths[path] = mcp_path_item(methods)
        for path, item in paths.items():
            for method, operation in item.items():
                needed = credentials(method.upper(), path)
                if needed and "security" not in operation:
                    operation["security"] = [{name: []} for name in needed]
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        api.openapi_schema = schema
        return schema

    # FastAPI's documented way to customise the document: replace the method.
    api.openapi = openapi  # type: ignore[method-assign]
