"""The real Alertmanager (Debian's prometheus-alertmanager) fires real webhooks at opsgate:
grouping, bearer auth and send_resolved, instead of hand-written payloads alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alertmanager_proc import needs_alertmanager, running_alertmanager
from tests.builders import ALICE
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN, Rig
from tests.e2e.test_approval_loop import approve_data

pytestmark = needs_alertmanager

CONFIG = """
route:
  receiver: opsgate
  group_by: [alertname, namespace]
  group_wait: 200ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: opsgate
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""


@pytest.fixture
async def alertmanager(rig: Rig, tmp_path: Path) -> AsyncIterator[str]:
    assert rig.runtime is not None
    config = CONFIG.format(
        url=f"http://127.0.0.1:{rig.runtime.port}/webhook/alertmanager", token=WEBHOOK_TOKEN
    )
    async with running_alertmanager(config, tmp_path) as base:
        yield base


def _alert(pod: str, *, ends_at: datetime | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {
            "alertname": "CheckoutErrors",
            "namespace": "shop",
            "service": "checkout",
            "severity": "critical",
            "pod": pod,
        },
        "annotations": {
            "summary": "checkout 5xx above 5%",
            "opsgate_action": "kubectl rollout restart deployment/checkout -n shop",
        },
        "startsAt": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    return alert


async def test_real_alertmanager_drives_the_loop(rig: Rig, alertmanager: str) -> None:
    async with httpx.AsyncClient(base_url=alertmanager) as am:
        response = await am.post("/api/v2/alerts", json=[_alert("p1"), _alert("p2")])
        assert response.status_code == 200
        card = await rig.wait_card(timeout=15)
        await rig.wait_text(card.message_id, "2/2 firing", timeout=15)
        query = rig.telegram.tap(
            CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
        )
        await rig.telegram.wait_answer(query)
        reply = await rig.wait_reply(card.message_id, timeout=15)
        assert "Succeeded" in reply.plain_text

        ended = datetime.now(UTC) - timedelta(seconds=1)
        await am.post(
            "/api/v2/alerts", json=[_alert("p1", ends_at=ended), _alert("p2", ends_at=ended)]
        )
        resolved = await rig.wait_text(card.message_id, "RESOLVED", timeout=20)
        assert "0/2 firing" in resolved.plain_text
        assert "Done" in resolved.plain_text
    assert len(rig.cards()) == 1
