"""The storm digest of a chat: one message listing the incidents whose cards wait.

:mod:`opsgate.services.card_quota` lists an incident when its card has to wait; this job
places new lines on the chat's open digest (a new message once it is full, or once every
incident on it has its card or resolved) and brings each digest message up to date, edited
in place. Jobs of one chat run one at a time and coalesce, so a burst of new lines is one
edit. A card posted later does not edit the digest by itself (each edit would cost a send
of the budget the cards need): its line says "card posted" from the digest's next edit, for
new lines, a resolution, or the last edit once every incident on a full digest is settled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.chat import (
    ChatPort,
    ChatRejected,
    ChatTarget,
    DigestEntry,
    DigestView,
    MessageRef,
)
from opsgate.services.job_kinds import DIGEST, DigestJob
from opsgate.services.jobs import ClaimedJob, enqueue
from opsgate.services.severity import severity_rank
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Digest, DigestLine, Incident, utcnow

log = structlog.get_logger(__name__)

# With every line at its longest, this many still fit one Telegram message (4,096).
LINES_PER_DIGEST = 25
# Lines gather this long before the digest is posted or edited: during a storm it changes
# at most this often, spending few of the sends the cards need.
DIGEST_PAUSE = timedelta(seconds=2)


async def list_on_digest(session: AsyncSession, incident: Incident, now: datetime) -> None:
    """List ``incident`` on its chat's digest (once), in the caller's transaction."""
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(DigestLine)
    listed = await session.execute(
        insert.values(
            incident_id=incident.id, chat_id=incident.chat_id, created_at=now
        ).on_conflict_do_nothing(index_elements=["incident_id"])
    )
    if listed.rowcount:  # type: ignore[attr-defined]
        await schedule_digest(session, incident.chat_id, now)


async def list_many_on_digest(
    session: AsyncSession, incidents: Select[str, int, datetime], now: datetime
) -> None:
    """List the incidents ``incidents`` selects (id, chat, created) on their chat's digest,
    those not listed yet, in one statement; one digest job per chat gathers them."""
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(DigestLine)
    listed = await session.execute(
        insert.from_select(["incident_id", "chat_id", "created_at"], incidents)
        .on_conflict_do_nothing(index_elements=["incident_id"])
        .returning(DigestLine.chat_id)
    )
    for chat_id in set(listed.scalars().all()):
        await schedule_digest(session, chat_id, now)


async def schedule_digest(session: AsyncSession, chat_id: int, now: datetime) -> None:
    """Bring the chat's digest up to date soon (one waiting job per chat gathers the rest)."""
    await enqueue(session, DIGEST, DigestJob(chat_id=chat_id), run_at=now + DIGEST_PAUSE)


async def is_listed(session: AsyncSession, incident_id: str) -> bool:
    found = await session.scalar(
        select(DigestLine.incident_id).where(DigestLine.incident_id == incident_id)
    )
    return found is not None


@dataclass(frozen=True)
class _Shown:
    digest_id: int
    target: ChatTarget
    message_id: int | None
    view: DigestView
    settled: bool  # every incident on it has its card or resolved
    full: bool


class DigestPublisher:
    def __init__(self, db: Database, chat: ChatPort, *, cards_per_minute: int) -> None:
        self._db = db
        self._chat = chat
        self._cards_per_minute = cards_per_minute

    async def run_job(self, job: ClaimedJob[DigestJob]) -> None:
        chat_id = job.payload.chat_id
        async with job.lease.transaction() as session:
            placed = await self._place_new_lines(session, chat_id)
            shown = await self._digests(session, chat_id, placed)
        for digest in shown:
            await job.lease.ensure()
            message_id = digest.message_id
            try:
                if message_id is None:
                    ref = await self._chat.post_digest(digest.target, digest.view)
                    message_id = ref.message_id
                    log.info("digest_posted", chat_id=chat_id, message_id=message_id)
                else:
                    ref = MessageRef(digest.target.chat_id, message_id, digest.target.thread_id)
                    await self._chat.edit_digest(ref, digest.view)
            except ChatRejected as exc:
                # For good (the bot left the chat, say): the chat's next change tries again.
                log.warning("digest_rejected", chat_id=chat_id, error=str(exc))
                continue
            async with job.lease.transaction() as session:
                await session.execute(
                    update(Digest)
                    .where(Digest.id == digest.digest_id)
                    .values(
                        message_id=message_id,
                        shown=_fingerprint(digest.view),
                        shown_resolved=_resolved(digest.view),
                        done=digest.full and digest.settled,
                    )
                )

    async def _place_new_lines(self, session: AsyncSession, chat_id: int) -> set[int]:
        """The digests that got new lines."""
        new = (
            await session.scalars(
                select(DigestLine)
                .where(DigestLine.chat_id == chat_id, DigestLine.digest_id.is_(None))
                .order_by(DigestLine.created_at, DigestLine.incident_id)
            )
        ).all()
        if not new:
            return set()
        placed: set[int] = set()
        current = await session.scalar(
            select(Digest).where(Digest.chat_id == chat_id, Digest.full.is_(False))
        )
        used = 0
        if current is not None:
            if await _settled(session, current.id):
                # That storm is over: a digest far up the chat would go unseen.
                current.full = True
                current = None
            else:
                used = int(
                    await session.scalar(
                        select(func.count()).where(DigestLine.digest_id == current.id)
                    )
                    or 0
                )
        for line in new:
            if current is not None and used >= LINES_PER_DIGEST:
                current.full = True
                current = None
            if current is None:
                thread_id = await session.scalar(
                    select(Incident.thread_id).where(Incident.id == line.incident_id)
                )
                current = Digest(
                    chat_id=chat_id,
                    thread_id=thread_id,
                    full=False,
                    done=False,
                    created_at=utcnow(),
                )
                session.add(current)
                await session.flush()
                used = 0
            line.digest_id = current.id
            placed.add(current.id)
            used += 1
        return placed

    async def _digests(self, session: AsyncSession, chat_id: int, placed: set[int]) -> list[_Shown]:
        """The chat's digests to post or edit: missing, with new lines, with newly resolved
        incidents, or settled for good while their message shows an older state."""
        shown: list[_Shown] = []
        digests = await session.scalars(
            select(Digest)
            .where(Digest.chat_id == chat_id, Digest.done.is_(False))
            .order_by(Digest.id)
        )
        for digest in digests.all():
            found = (
                await session.execute(
                    select(
                        Incident.id,
                        Incident.severity,
                        Incident.alertname,
                        Incident.status,
                        Incident.message_id,
                        Incident.created_at,
                    )
                    .join(DigestLine, DigestLine.incident_id == Incident.id)
                    .where(DigestLine.digest_id == digest.id)
                )
            ).all()
            rows = sorted(found, key=lambda r: (severity_rank(r.severity), r.created_at, r.id))
            entries = tuple(
                DigestEntry(r.id, r.severity, r.alertname, _state(r.message_id, r.status))
                for r in rows
            )
            view = DigestView(entries, self._cards_per_minute)
            settled = all(entry.state != "waiting" for entry in entries)
            final = digest.full and settled
            current = digest.shown == _fingerprint(view)
            stale = (
                digest.message_id is None
                or digest.id in placed
                or digest.shown_resolved != _resolved(view)
                or (final and not current)
            )
            if not stale:
                digest.done = final
                continue
            target = ChatTarget(chat_id, digest.thread_id)
            shown.append(_Shown(digest.id, target, digest.message_id, view, settled, digest.full))
        return shown


async def _settled(session: AsyncSession, digest_id: int) -> bool:
    waiting = await session.scalar(
        select(func.count())
        .select_from(DigestLine)
        .join(Incident, Incident.id == DigestLine.incident_id)
        .where(
            DigestLine.digest_id == digest_id,
            Incident.message_id.is_(None),
            Incident.status != "resolved",
        )
    )
    return not waiting


def _state(message_id: int | None, status: str) -> str:
    if message_id is not None:
        return "card"
    return "resolved" if status == "resolved" else "waiting"


def _resolved(view: DigestView) -> int:
    return sum(1 for entry in view.entries if entry.state == "resolved")


def _fingerprint(view: DigestView) -> str:
    return hashlib.sha256(repr(view).encode()).hexdigest()
