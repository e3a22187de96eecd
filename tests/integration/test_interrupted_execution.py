"""An attempt cut short before its real call runs again; the dry run changed nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from opsgate.app import load_kube_client
from opsgate.sandbox.kube_api import FakeKube
from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import ApprovalService, RetryPolicy, Tapper
from opsgate.services.chat import ChatTarget, MessageRef
from opsgate.services.execution import ExecutionService
from opsgate.services.incidents import IncidentService
from opsgate.services.job_kinds import EXECUTE, PLAN, ApprovalJob, JobKind
from opsgate.services.kube_executor import KubeExecutor
from opsgate.services.plans import PlanService
from opsgate.services.playbooks import PlaybookService
from opsgate.services.routing import Router
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, ExecutionAttempt, Job
from opsgate.settings import Settings
from tests.builders import ALICE, am_payload, policy_source
from tests.job_helpers import held_job


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[FakeKube, KubeExecutor]]:
    fake = FakeKube()
    await fake.start()
    fake.add_deployment("shop", "checkout")
    settings = Settings(
        telegram_token="1:x",  # type: ignore[arg-type]
        alert_chat_id=-1,
        kubeconfig=str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
    )
    client = await load_kube_client(settings)
    try:
        yield fake, KubeExecutor(client, request_timeout=30)
    finally:
        await client.close()
        await fake.stop()


async def test_an_attempt_cut_short_in_its_dry_run_runs_again(
    database: Database, kube: tuple[FakeKube, KubeExecutor]
) -> None:
    fake, executor = kube
    approvals = ApprovalService(
        database,
        policy_source(),
        ttl=timedelta(hours=1),
        retry=RetryPolicy(2, 0.1),
    )
    incidents = IncidentService(
        database,
        approvals,
        router=Router(policy_source(), ChatTarget(-1)),
        playbooks=PlaybookService(database),
        policy=policy_source(),
    )
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
    assert approval is not None
    # Approved over its plan, as the card shows it: the attempt need not read one first.
    plans = PlanService(database, executor, approvals, reads=1, retry_seconds=0.1)
    await plans.run_job(await held_job(database, PLAN, ApprovalJob(approval_id=approval.id)))
    await approvals.decide(
        approval.id, Tapper(ALICE, "alice"), True, origin=MessageRef(-1, 1), origin_offers_it=True
    )
    fake.requests.clear()

    execution = ExecutionService(database, executor)
    job = await held_job(database, EXECUTE, ApprovalJob(approval_id=approval.id))
    # The first PATCH is the dry run: the worker dies while the API server holds it.
    fake.inject("PATCH", r"/deployments/checkout$", "timeout", delay=30)
    first = asyncio.create_task(execution.run_job(job))
    await asyncio.wait_for(_until(lambda: any(r.method == "PATCH" for r in fake.requests)), 10)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    await execution.run_job(job)

    patches = [r for r in fake.requests if r.method == "PATCH"]
    # The held dry run, then the attempt again from the start: dry run and real call.
    assert len(patches) == 3
    async with database.transaction() as session:
        row = await session.get(Execution, approval.id)
        attempts = list(await session.scalars(select(ExecutionAttempt)))
        publish = await session.scalar(select(Job).where(Job.kind == JobKind.PUBLISH_RESULT.value))
    assert row is not None and row.status == "succeeded" and row.attempts == 1
    assert [a.outcome for a in attempts] == ["succeeded"]
    assert publish is not None and publish.serial_key == f"card:{approval.incident_id}"


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.02)
