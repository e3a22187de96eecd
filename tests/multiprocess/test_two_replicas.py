"""Two ``opsgate serve`` replicas on one PostgreSQL database, one of them killed mid-run.

Telegram's webhook deliveries are spread over both replicas (as a load balancer would) and an
update a dead replica did not acknowledge is delivered again to the other. Approvers tap
racing each other, the cluster answers some real calls with 503 so retries are in flight, and
replica A is killed with SIGKILL half-way. Every approved action must run exactly once, every
incident keeps one card and gets its result, every tap is answered, and nothing stays pending.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage, FakeTelegram
from tests.builders import ALICE, BOB, CAROL, alert, am_payload, policy_document
from tests.conftest import drop_postgres, fresh_postgres_url
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN
from tests.procs import OpsgateProcesses, free_port, serve_env

pytestmark = pytest.mark.postgres

INCIDENTS = 40
SECRET = "replica-webhook-secret"
INCIDENT_ID = re.compile(r"INC-[0-9A-Z]+")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    url, name = await fresh_postgres_url()
    try:
        yield url
    finally:
        await drop_postgres(name)


def incident_of(card: FakeMessage) -> str:
    found = INCIDENT_ID.search(card.plain_text)
    assert found is not None, card.plain_text
    return found.group(0)


async def test_two_replicas_one_killed_every_action_runs_once(
    tmp_path: Path, postgres_url: str
) -> None:
    telegram = FakeTelegram()
    kube = FakeKube()
    await telegram.start()
    await kube.start()
    procs = OpsgateProcesses(tmp_path)
    try:
        telegram.add_chat(CHAT_ID, type="supergroup", title="On-call")
        for i in range(INCIDENTS):
            kube.add_deployment("shop", f"app-{i}", replicas=1)
        # Retries in flight while the replica dies: some real calls fail once with 503.
        for i in range(0, INCIDENTS, 3):
            kube.inject("PATCH", rf"/deployments/app-{i}$", 503, dry_run=False)
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy_document()))
        ports = [free_port(), free_port()]
        telegram.route_webhook_to([f"http://127.0.0.1:{port}" for port in ports])
        replicas = []
        for name, port in zip(("a", "b"), ports, strict=True):
            env = serve_env(
                telegram,
                kube,
                postgres_url,
                tmp_path / name,
                {
                    "policy_file": policy_file,
                    "instance_id": f"replica-{name}",
                    "telegram_webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
                    "telegram_webhook_secret": SECRET,
                    "job_lease_seconds": 6,
                    "retry_max": 3,
                },
            )
            replicas.append(procs.serve(env, name=f"replica-{name}", port=port))
        a, b = await asyncio.gather(*replicas)
        await asyncio.gather(a.wait_healthy(), b.wait_healthy())

        # Alerts arrive at both replicas; every other one asks for two approvers.
        async def fire(i: int) -> None:
            target = (a, b)[i % 2]
            labels = {"deployment": f"app-{i}"}
            payload = am_payload(
                f'{{}}:{{alertname="AppDown", app="app-{i}"}}',
                alert(
                    f"fp{i}",
                    alertname="AppDown",
                    action=f"kubectl rollout restart deployment/app-{i} -n shop",
                    risk="high" if i % 2 else None,
                    extra_labels=labels,
                ),
            )
            async with httpx.AsyncClient(
                base_url=target.base_url, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
            ) as client:
                assert (await client.post("/webhook/alertmanager", json=payload)).status_code == 200

        await asyncio.gather(*(fire(i) for i in range(INCIDENTS)))

        def cards() -> list[FakeMessage]:
            return [
                m
                for m in telegram.messages(CHAT_ID)
                if m.from_bot and m.reply_to_message_id is None and "Incident" in m.plain_text
            ]

        await telegram.wait_for(lambda: len(cards()) >= INCIDENTS, 60)
        users = [telegram.user(uid, name) for uid, name in ((ALICE, "alice"), (BOB, "bob"))]
        carol = telegram.user(CAROL, "carol")
        queries: list[str] = []

        def tap_all(batch: list[FakeMessage]) -> None:
            for card in batch:
                data = next(d for _t, d in card.buttons if d and d.startswith("v1:ap:"))
                # Double taps and a third approver racing the quorum.
                for user in (users[0], users[1], users[0], carol):
                    queries.append(telegram.tap(CHAT_ID, card.message_id, user, data))

        posted = cards()[:INCIDENTS]
        tap_all(posted[: INCIDENTS // 2])
        await asyncio.sleep(0.5)
        a.kill_9()
        await a.wait()
        tap_all(posted[INCIDENTS // 2 :])

        def replies(card: FakeMessage) -> list[FakeMessage]:
            return [
                m
                for m in telegram.messages(CHAT_ID)
                if m.from_bot and m.reply_to_message_id == card.message_id
            ]

        await telegram.wait_for(lambda: all(replies(c) for c in posted), 120)
        await telegram.wait_for(lambda: not telegram.unanswered_callback_queries(), 30)

        # Deliveries to the dead replica failed and went to the survivor instead.
        assert any(not d.acknowledged for d in telegram.webhook_deliveries)
        by_incident = {incident_of(c): c for c in cards()}
        assert len(cards()) == INCIDENTS and len(by_incident) == INCIDENTS
        for i in range(INCIDENTS):
            applied = [
                r
                for r in kube.requests
                if r.method == "PATCH"
                and not r.dry_run
                and r.path.endswith(f"/deployments/app-{i}")
                and r.status is not None
                and r.status < 300
            ]
            assert len(applied) <= 1, f"app-{i} changed {len(applied)} times"
        outcomes = [replies(c)[0].plain_text for c in posted]
        # A real call cut short by the kill is reported as unknown, never sent again.
        unknown = [text for text in outcomes if "outcome is unknown" in text]
        assert all("Succeeded" in text for text in outcomes if text not in unknown), outcomes
        assert len(unknown) <= 1
        # A second reply is possible only for a reply Telegram took just as replica A died.
        assert sum(len(replies(c)) - 1 for c in posted) <= 1
        assert all(len(replies(c)) <= 2 for c in posted)

        conn = await asyncpg.connect(
            make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
        )
        try:
            pending = await conn.fetchval("SELECT count(*) FROM approvals WHERE status='pending'")
            open_runs = await conn.fetchval(
                "SELECT count(*) FROM executions WHERE status NOT IN ('succeeded', 'failed')"
            )
            executions = await conn.fetchval("SELECT count(*) FROM executions")
        finally:
            await conn.close()
        assert (pending, open_runs, executions) == (0, 0, INCIDENTS)
    finally:
        await procs.close()
        await kube.stop()
        await telegram.stop()
