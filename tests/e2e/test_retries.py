"""Transient failures retry (durably), permanent ones do not, and the card shows each step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import select

from opsgate.services.storage.db import Database
from opsgate.services.storage.models import ExecutionAttempt
from tests.builders import ALICE, alert, am_payload, decision_buttons
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data, real_writes

DEPLOYMENT_PATH = r"/apis/apps/v1/namespaces/shop/deployments/checkout$"


async def _approve(rig: Rig, fault: Callable[[], None] | None = None) -> int:
    """``fault`` is injected once the card is out: after the plan's own dry run."""
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    if fault is not None:
        fault()
    query = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    await rig.telegram.wait_answer(query)
    return card.message_id


async def _attempts(rig: Rig) -> list[ExecutionAttempt]:
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            return list(
                await session.scalars(select(ExecutionAttempt).order_by(ExecutionAttempt.attempt))
            )
    finally:
        await db.dispose()


async def test_transient_failure_then_success(rig: Rig) -> None:
    card_id = await _approve(rig, lambda: rig.kube.inject("PATCH", DEPLOYMENT_PATH, 503, count=1))
    await rig.wait_text(card_id, "attempt 1 failed: 503")
    reply = await rig.wait_reply(card_id)
    assert "Succeeded" in reply.plain_text and "2 attempts" in reply.plain_text
    final = rig.telegram.message(CHAT_ID, card_id)
    assert "attempt 1 failed: 503" in final.plain_text and "Done" in final.plain_text
    attempts = await _attempts(rig)
    assert [(a.attempt, a.outcome, a.http_status) for a in attempts] == [
        (1, "transient", 503),
        (2, "succeeded", None),
    ]
    assert attempts[0].approved_by == ["@alice"]
    assert all(a.duration_ms is not None for a in attempts)


async def test_dropped_connections_exhaust_the_retries(rig: Rig) -> None:
    card_id = await _approve(
        rig, lambda: rig.kube.inject("PATCH", DEPLOYMENT_PATH, "drop", count=10)
    )
    reply = await rig.wait_reply(card_id)
    assert "Failed" in reply.plain_text and "gave up after 3 attempts" in reply.plain_text
    assert [a.outcome for a in await _attempts(rig)] == ["transient"] * 3
    assert decision_buttons(rig.telegram.message(CHAT_ID, card_id)) == []


async def test_permanent_failure_is_not_retried(rig: Rig) -> None:
    card_id = await _approve(rig, lambda: rig.kube.inject("PATCH", DEPLOYMENT_PATH, 403, count=5))
    reply = await rig.wait_reply(card_id)
    assert "Failed" in reply.plain_text and "403" in reply.plain_text
    assert "not retried" in reply.plain_text
    attempts = await _attempts(rig)
    assert [(a.outcome, a.http_status, a.dry_run_ok) for a in attempts] == [
        ("permanent", 403, False)
    ]
    assert real_writes(rig) == []


async def test_missing_target_is_refused_by_the_plan(rig: Rig) -> None:
    await rig.post_alert(
        am_payload("g2", alert(action="kubectl rollout restart deployment/ghost -n shop"))
    )
    card = await rig.wait_card()
    card = await rig.wait_text(card.message_id, "does not exist")
    # The plan found no target: nothing to approve, nothing sent but the read.
    assert decision_buttons(card) == []
    assert not [r for r in rig.kube.requests if r.method == "PATCH"]


async def test_restart_during_the_retry_wait_resumes(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides["retry_delay_seconds"] = 1.5
    await rig.start()
    try:
        card_id = await _approve(
            rig, lambda: rig.kube.inject("PATCH", DEPLOYMENT_PATH, 503, count=1)
        )
        await rig.wait_text(card_id, "retrying in 1.5 s")
        await rig.stop()
        # Nobody runs opsgate for a moment; the retry is only a row in the database.
        await asyncio.sleep(0.5)
        await rig.start()
        reply = await rig.wait_reply(card_id, timeout=15)
        assert "Succeeded" in reply.plain_text and "2 attempts" in reply.plain_text
        assert len(real_writes(rig)) == 1
        assert [a.outcome for a in await _attempts(rig)] == ["transient", "succeeded"]
    finally:
        await rig.stop()


async def test_a_retry_waits_as_long_as_the_servers_retry_after(rig: Rig) -> None:
    # The rig retries 0.3 s apart; the API server asks for 2 s and gets them.
    card_id = await _approve(
        rig, lambda: rig.kube.inject("PATCH", DEPLOYMENT_PATH, 429, count=1, retry_after=2)
    )
    await rig.wait_reply(card_id, timeout=20)
    patches = [r for r in rig.kube.requests if r.method == "PATCH"]
    at = next(i for i, r in enumerate(patches) if r.status == 429)
    refused, retried = patches[at], patches[at + 1]
    assert refused.status == 429
    assert (retried.at - refused.at) >= 2.0
    assert len(real_writes(rig)) == 1
