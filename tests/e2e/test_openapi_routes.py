"""/openapi.json describes every route the running app answers, with the credential each
takes: FastAPI's routes, ``/mcp`` (McpDoor) and the POST routes RequestGate answers itself."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi.routing import APIRoute, iter_route_contexts

from opsgate.app import OpsGate
from opsgate.handlers.http_guards import AGENT_TOKEN, API_TOKEN, TELEGRAM_SECRET, RequestGate
from opsgate.handlers.mcp_door import McpDoor
from tests.e2e.rig import Rig
from tests.e2e.test_agent_gateway import agent_policy
from tests.procs import free_port

# The document itself is not one of its routes.
NOT_DESCRIBED = {("GET", "/openapi.json"), ("HEAD", "/openapi.json")}


def served_routes(og: OpsGate) -> set[tuple[str, str]]:
    """(method, path) of everything the app answers, walking the doors down to FastAPI."""
    gate = og.http_app
    assert isinstance(gate, RequestGate)
    served = {("POST", path) for path in gate.body_paths}
    door = gate._app
    assert isinstance(door, McpDoor)
    served |= {(m, path) for path, methods in door.paths.items() for m in methods}
    # Included routers are walked as FastAPI's own document builder walks them.
    for route in iter_route_contexts(og.api.routes):
        path = route.path_format
        assert isinstance(path, str), route
        served |= {(m, path) for m in route.methods or set() if m != "HEAD"}
        if isinstance(route.original_route, APIRoute):
            assert route.original_route.include_in_schema, path
    return served - NOT_DESCRIBED


def documented(schema: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in schema["paths"].items() for m in item}


async def check_every_route_described(rig: Rig) -> dict[str, Any]:
    assert rig.runtime is not None
    schema: dict[str, Any] = (await rig.client.get("/openapi.json")).json()
    served = served_routes(rig.runtime.og)
    missing = served - documented(schema)
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"
    assert ("POST", "/mcp") in served and ("POST", "/webhook/alertmanager") in served
    schemes = schema["components"]["securitySchemes"]
    assert {API_TOKEN, AGENT_TOKEN, TELEGRAM_SECRET} <= set(schemes)
    return schema


async def check_declared_credentials(rig: Rig, schema: dict[str, Any]) -> None:
    """Each route refuses a request without credentials if, and only if, it declares one."""
    async with httpx.AsyncClient(base_url=str(rig.client.base_url), timeout=10) as anonymous:
        for path, item in schema["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            for method, operation in item.items():
                if method.upper() == "GET" and path == "/mcp":
                    continue  # an event stream: refused below for POST, the same door
                answer = await anonymous.request(method.upper(), concrete, json={})
                declared = operation.get("security", [])
                names = {name for requirement in declared for name in requirement}
                if names == {TELEGRAM_SECRET}:
                    assert answer.status_code == 403, (method, path)
                elif names:
                    assert answer.status_code == 401, (method, path, answer.status_code)
                else:
                    assert answer.status_code not in (401, 403), (method, path)


async def test_every_route_is_in_the_openapi_document(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.policy = agent_policy()
    port = free_port()
    rig.overrides.update(
        http_port=port,
        telegram_webhook_url=f"http://127.0.0.1:{port}/hooks/telegram",
        telegram_webhook_secret="s3cret-Token_1",
    )
    await rig.start()
    schema = await check_every_route_described(rig)
    paths = schema["paths"]
    assert paths["/mcp"]["post"]["security"] == [{AGENT_TOKEN: []}]
    assert paths["/api/v1/agent/incidents"]["get"]["security"] == [{AGENT_TOKEN: []}]
    assert paths["/api/v1/approvals"]["post"]["security"] == [{API_TOKEN: []}]
    # The long poll takes either token (the agent's within its scope).
    long_poll = paths["/api/v1/approvals/{approval_id}"]["get"]
    assert long_poll["security"] == [{API_TOKEN: []}, {AGENT_TOKEN: []}]
    assert paths["/webhook/alertmanager"]["post"]["security"] == [{API_TOKEN: []}]
    assert paths["/hooks/telegram"]["post"]["security"] == [{TELEGRAM_SECRET: []}]
    assert "security" not in paths["/healthz"]["get"]
    await check_declared_credentials(rig, schema)


async def test_the_polling_app_describes_its_routes_too(rig: Rig) -> None:
    schema = await check_every_route_described(rig)
    await check_declared_credentials(rig, schema)
