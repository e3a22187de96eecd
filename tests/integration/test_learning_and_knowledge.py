"""Learning numbers against hand-computed values, and full-text knowledge search, on SQLite
and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from opsgate.services.chat import MessageRef
from opsgate.services.job_kinds import KNOWLEDGE, LEARN, ApprovalJob, LearnJob
from opsgate.services.knowledge import KnowledgeService
from opsgate.services.learning import NOT_HERE, LearningService, signature
from opsgate.services.operations import parse_operation
from opsgate.services.playbooks import record_text
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Approval,
    Disposition,
    Execution,
    Incident,
    KnowledgeEntry,
    PlaybookStat,
)
from tests.job_helpers import held_job

T0 = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
ACTION = "kubectl rollout restart deployment/checkout -n shop"


async def _case(
    db: Database,
    n: int,
    *,
    status: str = "approved",
    executed: str | None = "succeeded",
    verified: str | None = None,
    verified_after: float = 60.0,
    alertname: str = "CheckoutErrors",
    action: str = ACTION,
    service: str = "checkout",
    agent: str | None = None,
) -> str:
    """One incident with one approval (and execution), as the approval loop leaves them."""
    incident_id, approval_id = f"INC-TEST{n:04d}", f"ap{n:08d}"
    async with db.transaction() as session:
        session.add(
            Incident(
                id=incident_id,
                group_key=f"g{n}",
                source="alertmanager",
                status="resolved",
                alertname=alertname,
                severity="critical",
                service=service,
                namespace="shop",
                summary=f"{alertname} is firing",
                labels={"alertname": alertname, "team": "web"},
                chat_id=-1,
                created_at=T0,
                updated_at=T0,
            )
        )
        await session.flush()
        session.add(
            Approval(
                id=approval_id,
                incident_id=incident_id,
                action=action,
                operation=parse_operation(action).to_dict(),
                risk="medium",
                requested_by=f"agent:{agent}" if agent else "alertmanager",
                agent=agent,
                status=status,
                required_approvals=1,
                created_at=T0,
                expires_at=T0 + timedelta(hours=2),
            )
        )
        if executed is not None:
            await session.flush()
            session.add(
                Execution(
                    approval_id=approval_id,
                    status=executed,
                    attempts=1,
                    max_attempts=3,
                    retry_delay_seconds=30,
                    created_at=T0,
                    started_at=T0,
                    finished_at=T0 + timedelta(seconds=5),
                    result_detail="restarted",
                    verification_status=verified,
                    verification_detail="rollout complete" if verified else "",
                    verified_at=T0 + timedelta(seconds=verified_after) if verified else None,
                )
            )
    return approval_id


async def test_trust_counts_and_recovery_match_hand_computed_values(database: Database) -> None:
    learning = LearningService(database)
    outcomes = [("success", 60.0), ("failed", 0.0), ("success", 120.0)]
    for n, (verified, after) in enumerate(outcomes):
        approval_id = await _case(database, n, verified=verified, verified_after=after)
        for event in ("approved", "executed", "verified"):
            await learning.run_job(
                await held_job(database, LEARN, LearnJob(approval_id=approval_id, event=event))
            )
            # A retried job must not count twice.
            await learning.run_job(
                await held_job(database, LEARN, LearnJob(approval_id=approval_id, event=event))
            )
    rejected = await _case(database, 10, status="rejected", executed=None)
    await learning.run_job(
        await held_job(database, LEARN, LearnJob(approval_id=rejected, event="rejected"))
    )
    expired = await _case(database, 11, status="expired", executed=None)
    await learning.run_job(
        await held_job(database, LEARN, LearnJob(approval_id=expired, event="expired"))
    )

    async with database.transaction() as session:
        stat = await session.scalar(select(PlaybookStat))
        dispositions = {d.disposition: d.count for d in await session.scalars(select(Disposition))}
    assert stat is not None
    assert stat.signature == "CheckoutErrors|shop|checkout" and stat.operation == ACTION
    assert (stat.attempts, stat.successes) == (3, 3)
    assert (stat.verified_success, stat.verified_failed) == (2, 1)
    # 0.5 -> 0.3*1 + 0.7*0.5 = 0.65 -> 0.7*0.65 = 0.455 -> 0.3 + 0.7*0.455 = 0.6185
    assert stat.trust == pytest.approx(0.6185)
    assert stat.recovery_seconds_total / stat.recoveries == pytest.approx(90.0)
    assert dispositions == {"human_approved": 3, "human_rejected": 1, "expired": 1}
    record = await learning.record_for("CheckoutErrors|shop|checkout", ACTION)
    assert record is not None and record.verified_total == 3 and record.successes == 3

    elsewhere = MessageRef(-2, 1)
    assert (
        await learning.record_feedback(
            "ap00000000", "@alice", origin=elsewhere, origin_offers_it=True
        )
        == NOT_HERE
    )
    reply = MessageRef(-1, 77)
    feedback = await learning.record_feedback(
        "ap00000000", "@alice", origin=reply, origin_offers_it=True
    )
    assert feedback.startswith("Thanks")
    again = await learning.record_feedback(
        "ap00000000", "@bob", origin=reply, origin_offers_it=True
    )
    assert again.startswith("Already")
    await learning.run_job(
        await held_job(database, LEARN, LearnJob(approval_id="ap00000000", event="wrong_diagnosis"))
    )
    async with database.transaction() as session:
        stat = await session.scalar(select(PlaybookStat))
    assert stat is not None and stat.wrong_diagnoses == 1
    assert stat.trust == pytest.approx(0.7 * 0.6185)


async def test_an_agents_record_is_kept_beside_the_shared_one(database: Database) -> None:
    learning = LearningService(database)
    cases = [("holmes", "success"), ("holmes", "success"), ("holmes", "failed"), (None, "success")]
    for n, (agent, verified) in enumerate(cases):
        approval_id = await _case(database, n, verified=verified, agent=agent)
        for event in ("approved", "executed", "verified"):
            await learning.run_job(
                await held_job(database, LEARN, LearnJob(approval_id=approval_id, event=event))
            )
    await learning.run_job(
        await held_job(database, LEARN, LearnJob(approval_id="ap00000000", event="wrong_diagnosis"))
    )
    shared = await learning.record_for("CheckoutErrors|shop|checkout", ACTION)
    holmes = await learning.record_for("agent:holmes|CheckoutErrors|shop|checkout", ACTION)
    assert shared is not None and holmes is not None
    assert (shared.attempts, shared.verified_success, shared.verified_total) == (4, 3, 4)
    assert (holmes.attempts, holmes.verified_success, holmes.verified_total) == (3, 2, 3)
    # holmes: 0.5 -> 0.65 -> 0.755 -> 0.7*0.755 = 0.5285, wrong diagnosis -> 0.36995
    assert holmes.trust == pytest.approx(0.36995)
    # shared: ... 0.5285 -> 0.3 + 0.7*0.5285 = 0.66995, wrong diagnosis -> 0.468965
    assert shared.trust == pytest.approx(0.468965)
    assert record_text(holmes) == "worked 2/3, trust 0.37"
    async with database.read() as session:
        wrong = await session.scalar(
            select(PlaybookStat.wrong_diagnoses).where(
                PlaybookStat.signature == "agent:holmes|CheckoutErrors|shop|checkout"
            )
        )
    assert wrong == 1


async def test_signature_is_alert_name_namespace_service() -> None:
    incident = Incident(alertname="A", namespace="n", service="s")
    assert signature(incident) == "A|n|s"


async def test_full_text_search_ranks_references_and_decays(database: Database) -> None:
    knowledge = KnowledgeService(database)
    checkout = await _case(database, 1, verified="success")
    payments = await _case(
        database,
        2,
        alertname="PaymentsLatency",
        action="kubectl scale deployment/payments --replicas=6 -n shop",
        service="payments",
    )
    failed = await _case(
        database,
        3,
        executed="failed",
        alertname="QueueBacklog",
        action="kubectl delete pod/worker-1 -n shop",
        service="worker",
    )
    for approval_id in (checkout, payments, failed):
        await knowledge.write_back(
            await held_job(database, KNOWLEDGE, ApprovalJob(approval_id=approval_id))
        )
        await knowledge.write_back(
            await held_job(database, KNOWLEDGE, ApprovalJob(approval_id=approval_id))
        )  # idempotent

    hits = await knowledge.search("checkout restart")
    assert [h.incident_id for h in hits][:1] == ["INC-TEST0001"]
    assert "Fixed CheckoutErrors" in hits[0].title
    assert [h.incident_id for h in await knowledge.search("payments replicas")] == ["INC-TEST0002"]
    assert [h.incident_id for h in await knowledge.search("QueueBacklog")] == ["INC-TEST0003"]
    assert await knowledge.search("nonexistentword") == []
    assert await knowledge.search("\"'*:()") == []  # operators in input are not syntax

    async with database.transaction() as session:
        entries = {e.approval_id: e for e in await session.scalars(select(KnowledgeEntry))}
        assert len(entries) == 3
        assert entries[checkout].reference_count == 1
        assert "**Verification**: success: rollout complete" in entries[checkout].content
        assert "failure" in entries[failed].tags.split()
        # Age every entry; only the payments one was referenced recently.
        for entry in entries.values():
            entry.created_at = entry.created_at - timedelta(days=40)
            if entry.approval_id != payments:
                entry.referenced_at = None
    archived = await knowledge.archive_unreferenced(timedelta(days=30))
    assert archived == 2
    assert [h.incident_id for h in await knowledge.search("checkout restart")] == []
    assert [h.incident_id for h in await knowledge.search("payments")] == ["INC-TEST0002"]
