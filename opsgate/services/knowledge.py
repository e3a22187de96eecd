"""Knowledge write-back and search: every execution leaves a searchable incident case.

Search uses each database's own full-text engine (SQLite FTS5, PostgreSQL tsvector), never a
LIKE over every row.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.execution import approver_names, load_execution
from opsgate.services.job_kinds import ApprovalJob
from opsgate.services.jobs import ClaimedJob
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import (
    Alert,
    Approval,
    Execution,
    ExecutionAttempt,
    Incident,
    KnowledgeEntry,
    utcnow,
)

log = structlog.get_logger(__name__)

SEARCH_LIMIT = 3
DECAYING = ("draft", "review")
_WORD = re.compile(r"[\w.-]+", re.UNICODE)
PG_DOCUMENT = (
    "to_tsvector('english', coalesce(title, '') || ' ' || coalesce(content, '') || ' ' "
    "|| coalesce(tags, ''))"
)


@dataclass(frozen=True)
class SearchHit:
    entry_id: int
    incident_id: str
    title: str
    snippet: str
    status: str


class KnowledgeService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write_back(self, job: ClaimedJob[ApprovalJob]) -> None:
        """Create or refresh the case for one execution (refreshed once it is verified)."""
        async with job.lease.transaction() as session:
            record = await load_execution(session, job.payload.approval_id)
            if record is None:
                return
            approval, execution, incident = record.approval, record.execution, record.incident
            title, content, tags, category = await _case(session, incident, approval, execution)
            entry = await session.scalar(
                select(KnowledgeEntry).where(KnowledgeEntry.approval_id == approval.id)
            )
            now = utcnow()
            if entry is None:
                entry = KnowledgeEntry(
                    approval_id=approval.id,
                    incident_id=incident.id,
                    status="draft",
                    created_at=now,
                    reference_count=0,
                )
                session.add(entry)
            entry.title, entry.content, entry.tags, entry.category = title, content, tags, category
            entry.updated_at = now
        log.info("knowledge_written", approval_id=approval.id, incident_id=incident.id)

    async def search(
        self,
        words: str,
        limit: int = SEARCH_LIMIT,
        *,
        count_reference: bool = True,
        namespaces: Collection[str] | None = None,
    ) -> list[SearchHit]:
        """The best matches that are not archived; each one returned counts as referenced
        (unless ``count_reference`` is off: an agent's read tools change nothing). With
        ``namespaces``, only cases of incidents in them (none given: "default")."""
        terms = _WORD.findall(words)[:12]
        if not terms:
            return []
        params: dict[str, Any] = {"n": limit}
        scope = ""
        if namespaces is not None:
            scope = (
                " AND k.incident_id IN (SELECT i.id FROM incidents i "
                "WHERE coalesce(nullif(i.namespace, ''), 'default') IN :ns)"
            )
            params["ns"] = sorted(namespaces)
        # Counting is a write; without it a search takes no write lock.
        opened = self._db.transaction() if count_reference else self._db.read()
        async with opened as session:
            if self._db.is_sqlite:
                query = text(
                    "SELECT k.id, k.incident_id, k.title, k.status, "
                    "snippet(knowledge_fts, 1, '', '', ' … ', 16) AS snippet "
                    "FROM knowledge_fts JOIN knowledge_entries k ON k.id = knowledge_fts.rowid "
                    f"WHERE knowledge_fts MATCH :q AND k.status != 'archived'{scope} "
                    "ORDER BY bm25(knowledge_fts) LIMIT :n"
                )
                params["q"] = " ".join(f'"{t}"' for t in terms)
            else:
                query = text(
                    "SELECT k.id, k.incident_id, k.title, k.status, "
                    "ts_headline('english', k.content, q, 'MaxWords=24, MinWords=8, "
                    'StartSel="", StopSel=""\') AS snippet '
                    f"FROM knowledge_entries k, plainto_tsquery('english', :q) q "
                    f"WHERE {PG_DOCUMENT} @@ q AND k.status != 'archived'{scope} "
                    f"ORDER BY ts_rank({PG_DOCUMENT}, q) DESC LIMIT :n"
                )
                params["q"] = " ".join(terms)
            if namespaces is not None:
                query = query.bindparams(bindparam("ns", expanding=True))
            rows = await session.execute(query, params)
            hits = [
                SearchHit(r.id, r.incident_id, r.title, _lines(r.snippet), r.status) for r in rows
            ]
            if hits and count_reference:
                await session.execute(
                    update(KnowledgeEntry)
                    .where(KnowledgeEntry.id.in_([h.entry_id for h in hits]))
                    .values(
                        referenced_at=utcnow(),
                        reference_count=KnowledgeEntry.reference_count + 1,
                    )
                )
        return hits

    async def related_case(self, alertname: str, service: str) -> dict[str, Any] | None:
        """The best past case for an alert, for its card; showing it counts as a reference."""
        hits = await self.search(f"{alertname} {service}", limit=1)
        if not hits:
            return None
        return {
            "entry_id": hits[0].entry_id,
            "title": hits[0].title,
            "incident_id": hits[0].incident_id,
        }

    async def archive_unreferenced(self, older_than: timedelta) -> int:
        """Knowledge decay: drafts and entries under review nobody referenced lately."""
        cutoff = utcnow() - older_than
        async with self._db.transaction() as session:
            stale = list(
                await session.scalars(
                    select(KnowledgeEntry.id).where(
                        KnowledgeEntry.status.in_(DECAYING),
                        KnowledgeEntry.created_at < cutoff,
                        (KnowledgeEntry.referenced_at.is_(None))
                        | (KnowledgeEntry.referenced_at < cutoff),
                    )
                )
            )
            if stale:
                await session.execute(
                    update(KnowledgeEntry)
                    .where(KnowledgeEntry.id.in_(stale))
                    .values(status="archived", updated_at=utcnow())
                )
        if stale:
            log.info("knowledge_archived", count=len(stale))
        return len(stale)


async def _case(
    session: AsyncSession, incident: Incident, approval: Approval, execution: Execution
) -> tuple[str, str, str, str]:
    alerts = list(await session.scalars(select(Alert).where(Alert.incident_id == incident.id)))
    attempts = list(
        await session.scalars(
            select(ExecutionAttempt)
            .where(ExecutionAttempt.approval_id == approval.id)
            .order_by(ExecutionAttempt.attempt)
        )
    )
    approvers = await approver_names(session, approval.id)
    labels = {str(k): str(v) for k, v in incident.labels.items()}
    category = labels.get("category") or next(
        (str(a.labels.get("category")) for a in alerts if a.labels.get("category")), "general"
    )
    succeeded = execution.status == "succeeded"
    mode = "auto-approved" if approval.requested_by == "auto_approve" else "human-approved"
    verification = (
        f"{execution.verification_status}: {execution.verification_detail}"
        if execution.verification_status
        else "not applicable"
    )
    services = sorted({a.labels.get("service", "") for a in alerts} - {""}) or [incident.service]
    title = (
        f"{'Fixed' if succeeded else 'Failed to fix'} {incident.alertname or 'alert'} "
        f"with {approval.action}"
    )[:300]
    lines = [
        f"# {title}",
        "",
        f"- **Incident**: {incident.id} ({incident.status})",
        f"- **Alert**: {incident.alertname} ({incident.severity or 'no severity'})",
        f"- **Summary**: {incident.summary or '-'}",
        f"- **Services**: {', '.join(s for s in services if s) or '-'}",
        f"- **Namespace**: {incident.namespace or '-'}",
        f"- **Labels**: {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}",
        f"- **Action**: `{approval.action}` (risk {approval.risk}, {mode})",
        f"- **Requested by**: {approval.requested_by}",
        f"- **Approved by**: {', '.join(approvers) or '-'}",
        f"- **Attempts**: {execution.attempts}",
        f"- **Result**: {execution.status}: {execution.result_detail}",
        f"- **Verification**: {verification}",
        "",
        "## Attempts",
        *(
            f"{a.attempt}. {a.outcome}"
            + (f" ({a.http_status})" if a.http_status else "")
            + (f": {a.error}" if a.error else "")
            for a in attempts
        ),
    ]
    if approval.description:
        lines += ["", "## Why it was proposed", approval.description]
    tags = " ".join(
        dict.fromkeys(
            t
            for t in (
                mode,
                "success" if succeeded else "failure",
                category,
                incident.alertname,
                incident.namespace,
                incident.service,
                approval.operation.get("kind", ""),
            )
            if t
        )
    )
    return title, "\n".join(lines), tags, category[:64]


def _lines(snippet: str) -> str:
    """The snippet's lines with their spacing tidied: the line breaks carry the markdown."""
    return "\n".join(" ".join(line.split()) for line in snippet.splitlines() if line.strip())
