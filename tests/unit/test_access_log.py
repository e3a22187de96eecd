"""The access log line for requests the app itself fails or refuses (the gate's own refusals
are proven end to end in tests/e2e/test_operability.py)."""

from __future__ import annotations

import httpx
import structlog

from opsgate.handlers.http_guards import Receive, RequestGate, Scope, Send


async def broken(_scope: Scope, _receive: Receive, _send: Send) -> None:
    raise RuntimeError("boom")


async def not_found(_scope: Scope, _receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"secret body"})


async def fine(_scope: Scope, _receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def call(app: object, path: str) -> list[structlog.typing.EventDict]:
    gate = RequestGate(app, token="t0ken")  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=gate, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://opsgate") as client:
        with structlog.testing.capture_logs() as logs:
            await client.post(
                path, content=b"secret body", headers={"Authorization": "Bearer t0ken"}
            )
    return [e for e in logs if e["event"].startswith("http_request_")]


async def test_a_crash_is_logged_as_a_failed_request() -> None:
    [line] = await call(broken, "/api/v1/approvals?x=1")
    assert line["event"] == "http_request_failed" and line["log_level"] == "warning"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/v1/approvals", 500)
    assert "t0ken" not in repr(line) and "secret body" not in repr(line)


async def test_a_refusal_of_the_app_is_logged_and_a_success_is_not() -> None:
    [line] = await call(not_found, "/nowhere")
    assert (line["event"], line["status"], line["path"]) == (
        "http_request_refused",
        404,
        "/nowhere",
    )
    assert "reason" not in line
    assert await call(fine, "/healthz") == []
