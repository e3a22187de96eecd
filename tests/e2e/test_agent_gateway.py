"""AI agents through the MCP SDK's own client and through REST, against a running opsgate."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import func, select

from opsgate.services.policy import Policy, PolicyDocument
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import AuditHead, Base, KnowledgeEntry
from tests.builders import ALICE, BOB, alert, am_payload, policy_document
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data

HOLMES_TOKEN = "holmes-secret-token"
NOSY_TOKEN = "nosy-secret-token"
LABELS = {"alertname": "CheckoutLatency", "namespace": "shop", "service": "checkout"}


def agent_policy(quorum: dict[str, int] | None = None) -> Policy:
    document = policy_document(quorum)
    document["agents"] = {
        "holmes": {
            "token_sha256": hashlib.sha256(HOLMES_TOKEN.encode()).hexdigest(),
            "namespaces": ["shop"],
            "operations": ["rollout_restart", "scale"],
            "max_risk": "medium",
        },
        "nosy": {
            "token_sha256": hashlib.sha256(NOSY_TOKEN.encode()).hexdigest(),
            "namespaces": ["payments"],
            "operations": ["delete_pod"],
            "max_risk": "low",
        },
    }
    return Policy(PolicyDocument.model_validate(document))


@pytest.fixture
async def agent_rig(rig_factory: Rig) -> Rig:
    rig_factory.policy = agent_policy({"medium": 2})
    await rig_factory.start()
    return rig_factory


@asynccontextmanager
async def mcp_client(rig: Rig, token: str) -> AsyncIterator[Client]:
    assert rig.runtime is not None
    url = f"http://127.0.0.1:{rig.runtime.port}/mcp"
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=90)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_mcp_propose_card_taps_and_wait_for_the_result(agent_rig: Rig) -> None:
    rig = agent_rig
    async with mcp_client(rig, HOLMES_TOKEN) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {
            "list_operations",
            "propose_remediation",
            "get_proposal",
            "wait_for_decision",
            "list_incidents",
            "get_timeline",
            "search_knowledge",
        }
        ops = {o["kind"]: o for o in (await call(client, "list_operations"))["operations"]}
        assert ops["rollout_restart"]["you_may_propose"]
        assert not ops["rollout_undo"]["you_may_propose"]

        proposed = await call(
            client,
            "propose_remediation",
            action="kubectl rollout restart deployment/checkout",
            labels=LABELS,
            rationale="p99 latency tripled after a config reload; pods hold stale config",
            evidence={
                "text": "checked pods",
                "findings": {"p99_ms": "930", "restarts": "0"},
                "links": ["https://grafana.example/d/checkout"],
                "logs": ["WARN config cache stale <reload>"],
            },
        )
        assert proposed["status"] == "pending" and proposed["agent"] == "holmes"
        assert proposed["proposed_by"] == "agent:holmes"
        approval_id = proposed["approval_id"]
        card = await rig.wait_card()
        assert "kubectl rollout restart deployment/checkout -n shop" in card.plain_text
        assert "proposed by agent holmes" in card.plain_text
        assert "pods hold stale config" in card.plain_text and "p99_ms=930" in card.plain_text
        alice = rig.telegram.user(ALICE, "alice")
        asked = rig.telegram.send_text(CHAT_ID, alice, f"/evidence {proposed['incident_id']}")
        evidence = (await rig.wait_reply(asked.message_id)).plain_text
        assert "WARN config cache stale <reload>" in evidence
        assert "https://grafana.example/d/checkout" in evidence

        # Nothing decided yet: a short wait comes back not final.
        waited = await call(
            client, "wait_for_decision", approval_id=approval_id, timeout_seconds=0.2
        )
        assert waited["final"] is False and waited["status"] == "pending"

        # A changed proposal for the same incident starts the quorum again.
        first = rig.telegram.tap(CHAT_ID, card.message_id, alice, approve_data(card))
        await rig.telegram.wait_answer(first)
        changed = await call(
            client,
            "propose_remediation",
            operation={"kind": "scale", "name": "checkout", "replicas": 4},
            incident_id=proposed["incident_id"],
            rationale="more replicas instead",
        )
        assert changed["superseded"] == approval_id and changed["approvals"] == []
        card = await rig.wait_text(card.message_id, "--replicas=4")
        assert "Approvals 0/2" in card.plain_text
        # Signed over the plan: a signature made before it is read lapses once it binds.
        card = await rig.wait_text(card.message_id, "-> 4 replicas")
        bob = rig.telegram.user(BOB, "bob")
        for user in (alice, bob):
            tapped = rig.telegram.tap(CHAT_ID, card.message_id, user, approve_data(card))
            await rig.telegram.wait_answer(tapped)
            card = rig.telegram.message(CHAT_ID, card.message_id)

        result = await call(
            client, "wait_for_decision", approval_id=changed["approval_id"], timeout_seconds=30
        )
        assert result["final"] and result["status"] == "approved"
        assert result["approvals"] == ["@alice", "@bob"]
        assert result["execution"]["status"] == "succeeded"
        deployment = rig.kube.get("deployments", "shop", "checkout")
        assert deployment is not None and deployment["spec"]["replicas"] == 4

        timeline = await call(client, "get_timeline", incident_id=proposed["incident_id"])
        kinds = [e["kind"] for e in timeline["events"]]
        assert "approval_superseded" in kinds and "execution_succeeded" in kinds


async def test_mcp_refuses_out_of_scope_before_any_card(agent_rig: Rig) -> None:
    rig = agent_rig
    async with mcp_client(rig, HOLMES_TOKEN) as client:
        for arguments, reason in (
            ({"action": "kubectl rollout undo deployment/checkout"}, "may not propose"),
            ({"action": "kubectl rollout restart deployment/x -n payments"}, "namespace payments"),
            ({"action": "kubectl exec checkout -- sh"}, "action refused"),
            # Within its kinds and namespaces, but above its max risk (medium).
            (
                {"action": "kubectl rollout restart deployment/checkout", "risk": "high"},
                "may propose up to medium risk; this is high",
            ),
        ):
            result = await client.call_tool(
                "propose_remediation", {**arguments, "labels": LABELS, "rationale": "r"}
            )
            assert result.is_error
            assert reason in str(result.content)
    assert rig.bot_messages() == []


async def test_a_wrong_token_gets_no_mcp_and_no_rest(agent_rig: Rig) -> None:
    assert agent_rig.runtime is not None
    base = f"http://127.0.0.1:{agent_rig.runtime.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        bad = {"Authorization": "Bearer nope"}
        assert (await http.post("/mcp", json={}, headers=bad)).status_code == 401
        assert (await http.get("/api/v1/agent/operations", headers=bad)).status_code == 401
        # The webhook's token is not an agent token.
        webhook = dict(agent_rig.client.headers)
        assert (await http.get("/api/v1/agent/operations", headers=webhook)).status_code == 401


async def test_rest_proposal_and_long_poll(agent_rig: Rig) -> None:
    rig = agent_rig
    assert rig.runtime is not None
    base = f"http://127.0.0.1:{rig.runtime.port}"
    headers = {"Authorization": f"Bearer {HOLMES_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=90) as http:
        refused = await http.post(
            "/api/v1/agent/proposals",
            json={"action": "kubectl delete pod checkout-1", "labels": LABELS, "rationale": "r"},
        )
        assert refused.status_code == 403 and "delete_pod" in refused.json()["detail"]
        made = await http.post(
            "/api/v1/agent/proposals",
            json={
                "action": "kubectl rollout restart deployment/checkout",
                "labels": LABELS,
                "rationale": "stale config",
            },
        )
        assert made.status_code == 201, made.text
        approval_id = made.json()["approval_id"]
        card = await rig.wait_card()
        # Not decided: the long poll ends with the wait, not final.
        polled = await rig.client.get(f"/api/v1/approvals/{approval_id}", params={"wait": 0.3})
        assert polled.status_code == 200 and polled.json()["final"] is False
        assert (await rig.client.get(f"/api/v1/approvals/{approval_id}?wait=61")).status_code == 422
        for user in (rig.telegram.user(ALICE, "alice"), rig.telegram.user(BOB, "bob")):
            card = rig.telegram.message(CHAT_ID, card.message_id)
            tapped = rig.telegram.tap(CHAT_ID, card.message_id, user, approve_data(card))
            await rig.telegram.wait_answer(tapped)
        done = await rig.client.get(
            f"/api/v1/approvals/{approval_id}", params={"wait": 30}, timeout=60
        )
        body = done.json()
        assert body["final"] and body["execution_status"] == "succeeded"
        mine = await http.get(f"/api/v1/agent/proposals/{approval_id}", params={"wait": 1})
        assert mine.json()["status"] == "approved"
    nosy = {"Authorization": f"Bearer {NOSY_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=nosy) as http:
        # Another agent, scoped elsewhere, cannot read it.
        assert (await http.get(f"/api/v1/agent/proposals/{approval_id}")).status_code == 404
    openapi = (await rig.client.get("/openapi.json")).json()
    wait = [
        p
        for p in openapi["paths"]["/api/v1/approvals/{approval_id}"]["get"]["parameters"]
        if p["name"] == "wait"
    ]
    assert wait and wait[0]["schema"]["maximum"] == 60
    assert "/api/v1/agent/proposals" in openapi["paths"]


async def until(
    read: Callable[[], Awaitable[dict[str, Any]]],
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
) -> dict[str, Any]:
    """``read()`` again until ``done`` says yes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        assert asyncio.get_running_loop().time() < deadline, value
        await asyncio.sleep(0.2)


async def snapshot(rig: Rig) -> dict[str, object]:
    """What a write would change: every table's row count, the audit chain's head, and the
    knowledge entries' reference counts (a search that counted itself would raise them)."""
    db = Database(rig.database_url)
    try:
        async with db.read() as session:
            counts: dict[str, object] = {
                table.name: await session.scalar(select(func.count()).select_from(table))
                for table in Base.metadata.sorted_tables
            }
            head = (await session.execute(select(AuditHead.seq, AuditHead.hash))).all()
            references = await session.scalar(select(func.sum(KnowledgeEntry.reference_count)))
    finally:
        await db.dispose()
    return {**counts, "audit_head": [tuple(row) for row in head], "references": references}


async def settled(rig: Rig, timeout: float = 30) -> dict[str, object]:
    """A snapshot once the background work has stopped changing it."""
    deadline = asyncio.get_running_loop().time() + timeout
    before = await snapshot(rig)
    while True:
        await asyncio.sleep(1)
        now = await snapshot(rig)
        if now == before:
            return now
        assert asyncio.get_running_loop().time() < deadline, "opsgate never went quiet"
        before = now


async def test_read_tools_show_the_proposal_and_change_nothing(agent_rig: Rig) -> None:
    rig = agent_rig
    # An incident only nosy (payments) may see, older than holmes's one in shop.
    payments = alert("pay1", alertname="PaymentsDown", namespace="payments", action=None)
    posted = await rig.post_alert(am_payload('{}:{alertname="PaymentsDown"}', payments))
    assert posted.status_code == 200, posted.text
    async with mcp_client(rig, HOLMES_TOKEN) as holmes, mcp_client(rig, NOSY_TOKEN) as nosy:
        proposed = await call(
            holmes,
            "propose_remediation",
            action="kubectl rollout restart deployment/checkout",
            labels=LABELS,
            rationale="pods hold stale config",
            evidence={"findings": {"p99_ms": "930"}},
        )
        approval_id, incident_id = proposed["approval_id"], proposed["incident_id"]

        # get_proposal: status, plan (once read), signatures, and nothing run yet.
        shown = await until(
            lambda: call(holmes, "get_proposal", approval_id=approval_id),
            lambda p: p["plan"] is not None,
        )
        assert shown["status"] == "pending" and shown["final"] is False
        assert shown["plan"] == {
            "state": "ready",
            "summary": "2 pods replaced, one rollout",
            "warnings": [],
        }
        assert shown["operation"]["kind"] == "rollout_restart"
        assert shown["operation"]["namespace"] == "shop"
        assert shown["agent"] == "holmes" and shown["required_approvals"] == 2
        assert shown["approvals"] == [] and shown["execution"] is None

        # list_incidents: each agent sees its namespaces only, and the total counts only those.
        mine = await call(holmes, "list_incidents")
        assert [i["id"] for i in mine["incidents"]] == [incident_id] and mine["total"] == 1
        assert mine["incidents"][0]["namespace"] == "shop"
        theirs = await call(nosy, "list_incidents", limit=1)
        assert theirs["total"] == 1 and len(theirs["incidents"]) == 1
        assert theirs["incidents"][0]["alertname"] == "PaymentsDown"
        assert (await nosy.call_tool("get_timeline", {"incident_id": incident_id})).is_error
        assert (await nosy.call_tool("get_proposal", {"approval_id": approval_id})).is_error

        def holmes_cards() -> list[Any]:
            return [c for c in rig.cards() if "proposed by agent holmes" in c.plain_text]

        await rig.telegram.wait_for(lambda: bool(holmes_cards()), 10)
        card = holmes_cards()[0]
        for user in (rig.telegram.user(ALICE, "alice"), rig.telegram.user(BOB, "bob")):
            card = rig.telegram.message(CHAT_ID, card.message_id)
            tapped = rig.telegram.tap(CHAT_ID, card.message_id, user, approve_data(card))
            await rig.telegram.wait_answer(tapped)
        done = await call(holmes, "wait_for_decision", approval_id=approval_id, timeout_seconds=30)
        assert done["final"] and done["approvals"] == ["@alice", "@bob"]
        assert done["execution"]["status"] == "succeeded"

        # search_knowledge: the case the run left, for holmes only (it is in shop).
        hits = await until(
            lambda: call(holmes, "search_knowledge", query="CheckoutLatency checkout"),
            lambda h: bool(h["hits"]),
        )
        assert hits["hits"][0]["incident_id"] == incident_id
        assert "CheckoutLatency" in hits["hits"][0]["title"]
        hidden = await call(nosy, "search_knowledge", query="CheckoutLatency checkout")
        assert hidden["hits"] == []

        timeline = await call(holmes, "get_timeline", incident_id=incident_id)
        events = {e["kind"]: e for e in timeline["events"]}
        assert events["approval_requested"]["actor"] == "agent:holmes"
        assert "approved by @alice (1/2)" in [
            e["summary"] for e in timeline["events"] if e["kind"] == "approval_signed"
        ]
        assert "execution_succeeded" in events and timeline["total"] == len(timeline["events"])

        # Every read tool, by both agents: nothing in the database changes.
        before = await settled(rig)
        for client in (holmes, nosy):
            await client.call_tool("list_operations", {})
            await client.call_tool("get_proposal", {"approval_id": approval_id})
            await client.call_tool(
                "wait_for_decision", {"approval_id": approval_id, "timeout_seconds": 0.2}
            )
            await client.call_tool("list_incidents", {"offset": 0, "limit": 50})
            await client.call_tool("get_timeline", {"incident_id": incident_id})
            await client.call_tool("search_knowledge", {"query": "checkout"})
        assert await snapshot(rig) == before
