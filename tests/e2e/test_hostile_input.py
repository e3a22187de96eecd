"""Input that cannot be stored gets a 4xx with a reason that encodes, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.builders import alert, am_payload
from tests.e2e.rig import WEBHOOK_TOKEN, Rig

AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}


def proposal(**fields: object) -> dict[str, object]:
    return {
        "action": "kubectl rollout restart deployment/checkout -n shop",
        "requested_by": "capacity-bot",
        "labels": {"alertname": "CheckoutLatency", "namespace": "shop"},
        **fields,
    }


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# Raw bodies: json.dumps would refuse or escape what a hostile client sends as it is.
API_BODIES = {
    "nan": '{"action": NaN, "requested_by": "x", "labels": {"alertname": "A"}}',
    "infinity": json.dumps(proposal(summary="x")).replace('"x"', "Infinity"),
    "lone surrogate in risk": json.dumps(proposal(risk="@")).replace("@", "\\ud800x"),
    "lone surrogate in summary": json.dumps(proposal(summary="@")).replace("@", "\\udfff"),
    "lone surrogate in a label key": json.dumps(
        proposal(labels={"@": "v", "alertname": "A"})
    ).replace('"@"', '"\\ud800"'),
    "id past int64": json.dumps(proposal(requester_telegram_id=2**70)),
    "evidence 960 deep": json.dumps(proposal()).replace(
        '"labels"', f'"evidence": {nested(960)}, "labels"'
    ),
    "evidence 100000 deep": json.dumps(proposal()).replace(
        '"labels"', f'"evidence": {nested(100_000)}, "labels"'
    ),
}


def webhook_body(**alert_fields: object) -> str:
    return json.dumps(am_payload('{}:{alertname="X"}', {**alert(), **alert_fields}))


WEBHOOK_BODIES = {
    "naive timestamp": webhook_body(startsAt="2024-01-01T00:00:00"),
    "timestamp past UTC's range": webhook_body(startsAt="9999-12-31T23:59:59-14:00"),
    "lone surrogate in a label": webhook_body(
        labels={"alertname": "X", "namespace": "shop", "pod": "@"}
    ).replace('"@"', '"\\ud800"'),
    "lone surrogate in a fingerprint": webhook_body(fingerprint="@").replace('"@"', '"\\udc00"'),
    "nesting 100000 deep": nested(100_000),
}


@pytest.mark.parametrize("name", sorted(API_BODIES))
async def test_api_bodies_that_cannot_be_stored_are_refused(rig: Rig, name: str) -> None:
    response = await rig.client.post("/api/v1/approvals", content=API_BODIES[name], headers=AUTH)
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]


@pytest.mark.parametrize("name", sorted(WEBHOOK_BODIES))
async def test_webhook_bodies_that_cannot_be_stored_are_refused(rig: Rig, name: str) -> None:
    response = await rig.client.post(
        "/webhook/alertmanager", content=WEBHOOK_BODIES[name], headers=AUTH
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]


async def test_the_token_is_checked_before_the_body_is_read(rig: Rig) -> None:
    huge = b"{" * (8 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=str(rig.client.base_url), timeout=30) as anonymous:
        refused = await anonymous.post("/api/v1/approvals", content=huge)
        assert refused.status_code == 401
        assert refused.json() == {"detail": "missing or wrong bearer token"}
    too_large = await rig.client.post("/webhook/alertmanager", content=huge, headers=AUTH)
    assert too_large.status_code == 413
    # The service is unharmed and the good path still works.
    assert (await rig.post_alert(am_payload())).status_code == 200
