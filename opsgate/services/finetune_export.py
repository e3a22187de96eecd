"""Fine-tune export: one JSONL record per decided approval (schema ``opsgate.finetune/v1``,
``opsgate/schemas/finetune_record.schema.json``). Nothing secret goes in: no settings, and
keys that look like credentials are redacted wherever they appear."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.execution import approver_names
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Alert, Approval, Execution, Incident, Signature

log = structlog.get_logger(__name__)

SCHEMA = "opsgate.finetune/v1"
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "finetune_record.schema.json"
SECRET_KEY = re.compile(r"(?i)(token|secret|password|passwd|authorization|api[_-]?key|cookie)")
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            str(k): REDACTED if SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def export_finetune(db: Database, since: datetime, out: Path) -> int:
    """Write every approval decided since ``since`` to ``out``; returns the record count."""
    async with db.transaction() as session:
        approvals = list(
            await session.scalars(
                select(Approval)
                .where(Approval.status.in_(("approved", "rejected")), Approval.decided_at >= since)
                .order_by(Approval.decided_at, Approval.id)
            )
        )
        records = [await _record(session, a) for a in approvals]
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    await asyncio.to_thread(_write, out, lines)
    log.info("finetune_exported", records=len(records), out=str(out), since=since.isoformat())
    return len(records)


def _write(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


async def _record(session: AsyncSession, approval: Approval) -> dict[str, Any]:
    incident = await session.get(Incident, approval.incident_id)
    assert incident is not None
    alerts = list(await session.scalars(select(Alert).where(Alert.incident_id == incident.id)))
    execution = await session.get(Execution, approval.id)
    if approval.status == "approved":
        deciders = await approver_names(session, approval.id)
    else:
        rejecters = await session.scalars(
            select(Signature).where(
                Signature.approval_id == approval.id, Signature.decision == "reject"
            )
        )
        deciders = [f"@{s.username}" if s.username else f"id {s.user_id}" for s in rejecters]
    return {
        "schema": SCHEMA,
        "approval_id": approval.id,
        "incident_id": incident.id,
        "created_at": approval.created_at.isoformat(),
        "alert": {
            "alertname": incident.alertname,
            "severity": incident.severity,
            "service": incident.service,
            "namespace": incident.namespace,
            "summary": incident.summary,
            "labels": redact({str(k): str(v) for k, v in incident.labels.items()}),
            "alerts": [
                {
                    "status": a.status,
                    "labels": redact({str(k): str(v) for k, v in a.labels.items()}),
                    "annotations": redact({str(k): str(v) for k, v in a.annotations.items()}),
                    "starts_at": _iso(a.starts_at),
                }
                for a in alerts
            ],
        },
        "evidence": redact(approval.evidence or {}),
        "proposal": {
            "action": approval.action,
            "operation": approval.operation,
            "risk": approval.risk,
            "description": approval.description,
            "requested_by": approval.requested_by,
            # The AI agent that proposed it (its evidence is above), and what was signed.
            "agent": approval.agent,
            "operation_digest": approval.operation_digest,
        },
        "decision": {
            "outcome": approval.status,
            "by": deciders,
            "at": _iso(approval.decided_at),
            "note": approval.decision_note,
        },
        "execution": None
        if execution is None
        else {
            "status": execution.status,
            "attempts": execution.attempts,
            "detail": execution.result_detail,
            "duration_seconds": execution.duration_seconds,
        },
        "verification": None
        if execution is None or execution.verification_status is None
        else {
            "status": execution.verification_status,
            "detail": execution.verification_detail,
        },
    }
