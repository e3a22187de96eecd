"""The bearer check in front of the webhook and the API."""

from __future__ import annotations

from typing import Any

import httpx

from opsgate.handlers.http_guards import Receive, RequestGate, Scope, Send, bearer_problem


def test_without_a_configured_token_the_protected_routes_are_off() -> None:
    assert bearer_problem(None, "Bearer anything") == (
        503,
        "OPSGATE_WEBHOOK_TOKEN is not set; this endpoint is off",
    )


def test_only_the_exact_token_as_a_bearer_passes() -> None:
    refused = (401, "missing or wrong bearer token")
    assert bearer_problem("s3cret", "") == refused
    assert bearer_problem("s3cret", "Basic s3cret") == refused
    assert bearer_problem("s3cret", "Bearer s3cre") == refused
    assert bearer_problem("s3cret", "Bearer s3cret ") == refused
    assert bearer_problem("s3cret", "Bearer s3cret") is None
    assert bearer_problem("s3cret", "bearer s3cret") is None


async def test_a_body_route_is_answered_by_the_gate_after_the_token_check() -> None:
    bodies: list[bytes] = []

    async def webhook(body: bytes) -> tuple[int, dict[str, Any]]:
        bodies.append(body)
        return 202, {"got": len(body), "text": "é"}

    async def app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 405, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gate = RequestGate(app, token="t0ken", body_routes={"/webhook/alertmanager": webhook})
    transport = httpx.ASGITransport(app=gate)  # type: ignore[arg-type]
    auth = {"Authorization": "Bearer t0ken"}
    async with httpx.AsyncClient(transport=transport, base_url="http://opsgate") as client:
        answered = await client.post("/webhook/alertmanager", content=b"x" * 70_000, headers=auth)
        assert (answered.status_code, answered.json()) == (202, {"got": 70_000, "text": "é"})
        assert answered.headers["content-type"] == "application/json"
        refused = await client.post("/webhook/alertmanager", content=b"{}")
        assert refused.status_code == 401
        # Other methods, and other paths, are the app's.
        assert (await client.get("/webhook/alertmanager", headers=auth)).status_code == 405
        assert (await client.post("/api/v1/approvals", headers=auth)).status_code == 405
    assert bodies == [b"x" * 70_000]
