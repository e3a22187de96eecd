"""The MCP read tools over REST, and the API's long poll with an agent's token, within scope."""

from __future__ import annotations

import httpx

from tests.e2e.rig import Rig
from tests.e2e.test_agent_gateway import HOLMES_TOKEN, LABELS, NOSY_TOKEN

# agent_rig is a fixture of tests/e2e/test_agent_gateway.py.
from tests.e2e.test_agent_gateway import agent_rig as agent_rig


def agent_http(rig: Rig, token: str) -> httpx.AsyncClient:
    assert rig.runtime is not None
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{rig.runtime.port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


async def test_incidents_timeline_and_knowledge_over_rest(agent_rig: Rig) -> None:
    rig = agent_rig
    async with agent_http(rig, HOLMES_TOKEN) as holmes, agent_http(rig, NOSY_TOKEN) as nosy:
        made = await holmes.post(
            "/api/v1/agent/proposals",
            json={
                "action": "kubectl rollout restart deployment/checkout",
                "labels": LABELS,
                "rationale": "stale config",
            },
        )
        assert made.status_code == 201, made.text
        incident_id = made.json()["incident_id"]
        await rig.wait_card()

        listed = (await holmes.get("/api/v1/agent/incidents", params={"limit": 5})).json()
        assert [i["id"] for i in listed["incidents"]] == [incident_id]
        assert listed["incidents"][0]["namespace"] == "shop"
        # nosy sees payments only: the shop incident is not listed for it.
        assert (await nosy.get("/api/v1/agent/incidents")).json()["incidents"] == []

        timeline = await holmes.get(f"/api/v1/agent/incidents/{incident_id}/timeline")
        assert timeline.status_code == 200
        assert timeline.json()["incident_id"] == incident_id
        assert timeline.json()["total"] >= 1 and timeline.json()["events"]
        hidden = await nosy.get(f"/api/v1/agent/incidents/{incident_id}/timeline")
        assert hidden.status_code == 404
        missing = await holmes.get("/api/v1/agent/incidents/INC-NOPE/timeline")
        assert missing.status_code == 404

        found = await holmes.get("/api/v1/agent/knowledge", params={"q": "checkout"})
        assert found.status_code == 200 and isinstance(found.json()["hits"], list)
        assert (await holmes.get("/api/v1/agent/knowledge")).status_code == 422
        assert (await holmes.get("/api/v1/agent/incidents?limit=51")).status_code == 422

    async with httpx.AsyncClient(base_url=str(rig.client.base_url)) as anonymous:
        for path in (
            "/api/v1/agent/incidents",
            f"/api/v1/agent/incidents/{incident_id}/timeline",
            "/api/v1/agent/knowledge?q=checkout",
        ):
            assert (await anonymous.get(path)).status_code == 401
            # The API token is not an agent token.
            assert (await rig.client.get(path)).status_code == 401


async def test_the_api_long_poll_answers_an_agent_within_its_scope(agent_rig: Rig) -> None:
    rig = agent_rig
    async with agent_http(rig, HOLMES_TOKEN) as holmes, agent_http(rig, NOSY_TOKEN) as nosy:
        made = await holmes.post(
            "/api/v1/agent/proposals",
            json={
                "action": "kubectl rollout restart deployment/checkout",
                "labels": LABELS,
                "rationale": "stale config",
            },
        )
        approval_id = made.json()["approval_id"]
        polled = await holmes.get(f"/api/v1/approvals/{approval_id}", params={"wait": 0.3})
        assert polled.status_code == 200, polled.text
        assert polled.json()["approval_id"] == approval_id and polled.json()["final"] is False
        assert (await holmes.get(f"/api/v1/approvals/{approval_id}?wait=61")).status_code == 422
        # Out of nosy's scope: as if it did not exist.
        hidden = await nosy.get(f"/api/v1/approvals/{approval_id}")
        assert hidden.status_code == 404
        assert (await holmes.get("/api/v1/approvals/APR-NOPE")).status_code == 404
        # The agent token opens that one read only: not the list, not a proposal for people.
        assert (await holmes.get("/api/v1/policy")).status_code == 401
        people = await holmes.post(
            "/api/v1/approvals",
            json={"action": "kubectl rollout restart deployment/checkout", "requested_by": "x"},
        )
        assert people.status_code == 401
        assert (await holmes.post(f"/api/v1/approvals/{approval_id}")).status_code == 401
    # The API token still sees every approval.
    assert (await rig.client.get(f"/api/v1/approvals/{approval_id}")).status_code == 200
    async with agent_http(rig, "nope") as stranger:
        assert (await stranger.get(f"/api/v1/approvals/{approval_id}")).status_code == 401
