"""The tamper-evident audit chain: every decision and execution attempt, hash-linked.

Each record's hash is sha256 over a canonical JSON of the record and the previous record's
hash, so editing, removing or reordering any record breaks every hash after it, and
``verify`` names the first record that no longer fits.

Appends are written at the very end of the transaction that made the decision
(``storage.db.before_commit``): the decision and its record commit together or not at all.
The append locks the chain's one head row (``SELECT … FOR NO KEY UPDATE``; SQLite
transactions all begin with ``BEGIN IMMEDIATE``), so two replicas never link two records to
one predecessor.
Taken last, that lock is never held while the transaction waits for another one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import structlog
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.storage.db import Database, before_commit
from opsgate.services.storage.models import AuditHead, AuditRecord, utcnow

log = structlog.get_logger(__name__)

GENESIS = "0" * 64
# The fields a record's hash covers: all but the hash.
_HASHED = ("seq", "at", "kind", "approval_id", "incident_id", "actor", "data", "prev_hash")
HEAD_ID = 1
_PENDING = "opsgate_audit_pending"
PAGE = 500


class AuditKind(StrEnum):
    PROPOSED = "proposed"
    SIGNED = "signed"
    # The plan was read: the approval's digest now covers its target facts too.
    PLAN_BOUND = "plan_bound"
    TAP_REFUSED = "tap_refused"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    ATTEMPT_STARTED = "attempt_started"
    ATTEMPT_ENDED = "attempt_ended"


@dataclass(frozen=True)
class _Entry:
    kind: AuditKind
    approval_id: str | None
    incident_id: str | None
    actor: str
    data: dict[str, Any] = field(default_factory=dict)


def record(
    session: AsyncSession,
    kind: AuditKind,
    *,
    approval_id: str | None = None,
    incident_id: str | None = None,
    actor: str = "opsgate",
    **data: Any,
) -> None:
    """Queue a record; it is appended when (and only if) the session's transaction commits."""
    pending: list[_Entry] = session.info.setdefault(_PENDING, [])
    pending.append(_Entry(kind, approval_id, incident_id, actor, _plain(data)))
    before_commit(session, "audit_chain", _append_pending)


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(row: AuditRecord) -> str:
    """What ``row.hash`` must be: over every field but the hash itself."""
    return _hash_of({name: getattr(row, name) for name in _HASHED})


def _hash_of(values: dict[str, Any]) -> str:
    """The hash of a record's column values (``hash`` itself left out)."""
    fields = {name: values[name] for name in _HASHED}
    fields["at"] = _iso(fields["at"])
    return hashlib.sha256(canonical(fields)).hexdigest()


async def _append_pending(session: AsyncSession) -> None:
    entries: list[_Entry] = session.info.pop(_PENDING, [])
    if not entries:
        return
    head = await session.scalar(
        select(AuditHead)
        .where(AuditHead.id == HEAD_ID)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if head is None:  # the migration creates it; a hand-made database may lack it
        head = AuditHead(id=HEAD_ID, seq=0, hash=GENESIS)
        session.add(head)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        row: dict[str, Any] = {
            "seq": head.seq + 1,
            # Microseconds are what both databases keep, so the hash survives the round trip.
            "at": utcnow(),
            "kind": entry.kind.value,
            "approval_id": entry.approval_id,
            "incident_id": entry.incident_id,
            "actor": entry.actor,
            "data": entry.data,
            "prev_hash": head.hash,
        }
        row["hash"] = _hash_of(row)
        rows.append(row)
        head.seq, head.hash = row["seq"], row["hash"]
    # One statement for all of them, without an ORM object each: nothing reads them back
    # before the commit, and a batch of new incidents appends one per approval.
    await session.execute(insert(AuditRecord), rows)
    await session.flush()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    broken_seq: int | None = None
    reason: str = ""


async def verify(db: Database) -> Verdict:
    """Walk the whole chain in order; the first record that does not fit is named."""
    expected_prev = GENESIS
    expected_seq = 1
    count = 0
    async for row in _rows(db):
        if row.seq != expected_seq:
            return Verdict(False, count, expected_seq, f"record {expected_seq} is missing")
        if row.prev_hash != expected_prev:
            return Verdict(False, count, row.seq, "its link to the previous record is broken")
        if record_hash(row) != row.hash:
            return Verdict(False, count, row.seq, "its content does not match its hash")
        expected_prev, expected_seq = row.hash, row.seq + 1
        count += 1
    async with db.read() as session:
        head = await session.get(AuditHead, HEAD_ID)
    if head is not None and (head.seq, head.hash) != (count, expected_prev):
        # Records cut off the end leave a head that points past the last one.
        return Verdict(False, count, count + 1, "records after this one were removed")
    return Verdict(True, count)


async def export(db: Database, since: datetime, out: TextIO) -> int:
    """The chain from ``since`` on, one JSON object a line, in chain order."""
    count = 0
    async for row in _rows(db):
        if row.at < since:
            continue
        out.write(json.dumps(as_dict(row), sort_keys=True, ensure_ascii=False) + "\n")
        count += 1
    return count


async def export_to(db: Database, since: datetime, path: Path | None, stdout: TextIO) -> int:
    if path is None:
        return await export(db, since, stdout)
    with path.open("w", encoding="utf-8") as out:
        return await export(db, since, out)


def as_dict(row: AuditRecord) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": _iso(row.at),
        "kind": row.kind,
        "approval_id": row.approval_id,
        "incident_id": row.incident_id,
        "actor": row.actor,
        "data": row.data,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


async def _rows(db: Database) -> AsyncIterator[AuditRecord]:
    after = 0
    while True:
        async with db.read() as session:
            page = list(
                await session.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.seq > after)
                    .order_by(AuditRecord.seq)
                    .limit(PAGE)
                )
            )
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1].seq


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds")


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """What JSON keeps as it is: the stored data hashes the same once read back."""
    loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return loaded
