"""kill -9 while webhooks share transactions: every group answered 200 is stored whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import yaml
from sqlalchemy import select

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from opsgate.services.job_kinds import JobKind
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Alert, Approval, Incident, Job
from tests.builders import am_payload, policy_document
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN
from tests.procs import OpsgateProcesses, serve_env

CLIENTS = 30
KILL_AFTER = 150


async def test_every_group_answered_200_before_a_kill_is_stored(tmp_path: Path) -> None:
    telegram, kube = FakeTelegram(), FakeKube()
    await telegram.start()
    await kube.start()
    telegram.add_chat(CHAT_ID, type="supergroup", title="On-call")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy_document()))
    url = f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}"
    env = serve_env(telegram, kube, url, tmp_path, {"policy_file": policy_file})
    procs = OpsgateProcesses(tmp_path)
    answered: list[str] = []
    killed = asyncio.Event()
    try:
        proc = await procs.serve(env)
        await proc.wait_healthy()

        async def client(n: int) -> None:
            async with httpx.AsyncClient(
                base_url=proc.base_url,
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                timeout=30,
            ) as http:
                i = 0
                while not killed.is_set():
                    group = f"kill-{n}-{i}"
                    i += 1
                    try:
                        response = await http.post("/webhook/alertmanager", json=am_payload(group))
                    except httpx.TransportError:
                        return  # the process is gone: this one's answer never came
                    if killed.is_set():
                        # Answered after the kill was sent: not counted either way.
                        return
                    assert response.status_code == 200, response.text
                    answered.append(group)
                    if len(answered) >= KILL_AFTER:
                        proc.kill_9()
                        killed.set()

        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        await proc.wait()
    finally:
        await procs.close()
        await kube.stop()
        await telegram.stop()
    db = Database(url)
    try:
        async with db.read() as session:
            incidents = dict((await session.execute(select(Incident.group_key, Incident.id))).all())
            with_alerts = set(await session.scalars(select(Alert.incident_id)))
            approvals = dict(
                (await session.execute(select(Approval.incident_id, Approval.id))).all()
            )
            jobs = set((await session.execute(select(Job.kind, Job.key))).all())
    finally:
        await db.dispose()
    assert len(answered) >= KILL_AFTER
    for group in answered:
        incident = incidents.get(group)
        assert incident is not None, f"{group} was answered 200 and is not stored"
        assert incident in with_alerts
        assert (JobKind.SYNC_CARD.value, incident) in jobs
        approval = approvals[incident]
        assert (JobKind.PLAN.value, approval) in jobs
