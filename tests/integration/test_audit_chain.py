"""The audit chain: every decision and attempt linked by hash; tampering is found."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from opsgate.services import audit_chain
from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import Tapper
from opsgate.services.audit_chain import AuditKind
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, AuditRecord
from tests.builders import ALICE, BOB, am_payload
from tests.integration.test_storage import CARD, services


async def _approved_incident(db: Database) -> str:
    approvals, incidents = services(db, quorum={"medium": 2})
    await incidents.ingest_alertmanager(AmPayload.model_validate(am_payload()))
    async with db.transaction() as session:
        approval = await session.scalar(select(Approval))
    assert approval is not None
    for tapper in (Tapper(ALICE, "alice"), Tapper(BOB, "bob")):
        await approvals.decide(approval.id, tapper, True, origin=CARD, origin_offers_it=True)
    return approval.id


async def _chain(db: Database) -> list[AuditRecord]:
    async with db.read() as session:
        return list(await session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPSGATE_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "opsgate.cli", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_decisions_are_chained_and_verify(database: Database) -> None:
    approval_id = await _approved_incident(database)
    rows = await _chain(database)
    assert [r.kind for r in rows] == ["proposed", "signed", "signed", "approved"]
    assert all(r.approval_id == approval_id for r in rows)
    assert rows[0].prev_hash == audit_chain.GENESIS
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert rows[1].actor == "@alice" and rows[3].data["approvers"] == ["@alice", "@bob"]
    assert rows[0].data["operation_digest"] == rows[3].data["operation_digest"]
    assert await audit_chain.verify(database) == audit_chain.Verdict(True, 4)


async def test_an_edited_row_is_named_by_verify(database: Database) -> None:
    await _approved_incident(database)
    assert _cli(database.url, "verify").returncode == 0
    async with database.transaction() as session:
        # Someone rewrites who signed, directly in the database.
        await session.execute(
            update(AuditRecord).where(AuditRecord.seq == 2).values(actor="@mallory")
        )
    verdict = await audit_chain.verify(database)
    assert (verdict.ok, verdict.broken_seq, verdict.records) == (False, 2, 1)
    done = _cli(database.url, "verify")
    assert done.returncode == 1
    assert "broken at record 2" in done.stderr


async def test_a_removed_row_and_a_cut_tail_are_found(database: Database) -> None:
    await _approved_incident(database)
    async with database.transaction() as session:
        await session.execute(delete(AuditRecord).where(AuditRecord.seq == 4))
    verdict = await audit_chain.verify(database)
    assert (verdict.ok, verdict.broken_seq) == (False, 4)
    async with database.transaction() as session:
        await session.execute(delete(AuditRecord).where(AuditRecord.seq == 2))
    verdict = await audit_chain.verify(database)
    assert (verdict.ok, verdict.broken_seq) == (False, 2)


async def test_a_rehashed_row_breaks_the_next_link(database: Database) -> None:
    """Editing a row and fixing its own hash still breaks the record after it."""
    await _approved_incident(database)
    rows = await _chain(database)
    forged = rows[1]
    forged.actor = "@mallory"
    async with database.transaction() as session:
        await session.execute(
            update(AuditRecord)
            .where(AuditRecord.seq == 2)
            .values(actor="@mallory", hash=audit_chain.record_hash(forged))
        )
    verdict = await audit_chain.verify(database)
    assert (verdict.ok, verdict.broken_seq) == (False, 3)


async def test_a_rolled_back_decision_leaves_no_record(database: Database) -> None:
    class Boom(Exception):
        pass

    try:
        async with database.transaction() as session:
            audit_chain.record(session, AuditKind.PROPOSED, actor="x")
            raise Boom
    except Boom:
        pass
    assert await _chain(database) == []


async def test_export_writes_json_lines_since_a_day(database: Database) -> None:
    await _approved_incident(database)
    out = io.StringIO()
    assert await audit_chain.export(database, datetime.now(UTC) - timedelta(days=1), out) == 4
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    later = io.StringIO()
    assert await audit_chain.export(database, datetime.now(UTC) + timedelta(days=1), later) == 0
    done = _cli(database.url, "export", "--since", "2000-01-01")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 4
