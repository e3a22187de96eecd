"""Which new card a chat gets now, and which incidents wait on its digest instead.

A chat gets at most ``cards_per_minute`` new cards in any minute: fewer than its Telegram
budget (20 a minute in a group), so the digest, command answers and card edits still get
through during a storm. Beyond that an incident is listed on the chat's digest and its card
waits; when a slot frees, the most severe waiting incident takes it, the oldest first among
equals. Decisions for one chat are taken one at a time, so two cards never take one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Exists, Select, and_, exists, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services.digests import list_many_on_digest, list_on_digest
from opsgate.services.job_kinds import JobKind
from opsgate.services.jobs import JobStatus
from opsgate.services.severity import rank_column, severity_rank
from opsgate.services.storage.models import Incident, Job

WINDOW = timedelta(minutes=1)
# A waiting card whose turn depends on more severe ones being posted looks again this soon.
RECHECK = timedelta(seconds=1)
# Decisions for one chat are serialised with this PostgreSQL advisory lock (class, chat);
# SQLite's BEGIN IMMEDIATE already serialises every write transaction.
QUOTA_LOCK_CLASS = 0x6F67_7131


@dataclass(frozen=True)
class CardQuota:
    cards_per_minute: int

    async def take_slot(
        self, session: AsyncSession, incident: Incident, now: datetime
    ) -> datetime | None:
        """None when ``incident``'s card may be posted now (the slot is taken, in the caller's
        transaction); else when to ask again, the incident being listed on the digest."""
        if incident.card_slot_at is not None:
            return None  # taken before; the post did not go through
        await self._serialise(session, incident.chat_id)
        slots = (
            await session.scalars(
                select(Incident.card_slot_at)
                .where(Incident.chat_id == incident.chat_id, Incident.card_slot_at > now - WINDOW)
                .order_by(Incident.card_slot_at)
            )
        ).all()
        room = self.cards_per_minute - len(slots)
        ahead = await self._waiting_ahead(session, incident)
        if room > 0 and ahead < room:
            incident.card_slot_at = now
            return None
        if room > 0:
            await list_on_digest(session, incident, now)
        else:
            # No card of this chat goes out before a slot frees, so every incident whose card
            # waits is listed now, in one statement, not each when its own job comes round:
            # in a storm those jobs queue behind each other, and the digest shows them all
            # at once. Their jobs still ask for their turn; their lines are there already.
            await list_many_on_digest(session, self._held_back(incident.chat_id), now)
        taken = [slot for slot in slots if slot is not None]
        return max(self._turn(taken, ahead, now), now + RECHECK)

    def _turn(self, slots: list[datetime], ahead: int, now: datetime) -> datetime:
        """When a card with ``ahead`` waiting cards before it may expect its slot: as the
        slots of the last minute free, one by one, the cards before it take them first.

        Each waiting job wakes near its own turn rather than all at the first free slot; one
        that wakes early (a more severe card came meanwhile) just waits again, and a slot left
        by a card that resolved is taken by the next one that wakes.
        """
        if not slots:
            return now  # the cards before it take the free slots now; look again soon
        turn = ahead + len(slots) - self.cards_per_minute
        rounds, index = divmod(max(turn, 0), len(slots))
        return slots[index] + WINDOW * (1 + rounds)

    async def _serialise(self, session: AsyncSession, chat_id: int) -> None:
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:kind, :chat)"),
                {"kind": QUOTA_LOCK_CLASS, "chat": chat_id % (2**31)},
            )

    @staticmethod
    def _held_back(chat_id: int) -> Select[str, int, datetime]:
        """The chat's incidents whose card is still to be posted by a queued job."""
        return select(Incident.id, Incident.chat_id, Incident.created_at).where(
            Incident.chat_id == chat_id,
            Incident.message_id.is_(None),
            Incident.card_slot_at.is_(None),
            Incident.status != "resolved",
            _card_queued(),
        )

    async def _waiting_ahead(self, session: AsyncSession, incident: Incident) -> int:
        """Incidents of the chat whose card waits too and comes before this one."""
        mine = severity_rank(incident.severity)
        rank = rank_column(Incident.severity)
        ahead = or_(
            rank < mine,
            and_(
                rank == mine,
                or_(
                    Incident.created_at < incident.created_at,
                    and_(Incident.created_at == incident.created_at, Incident.id < incident.id),
                ),
            ),
        )
        count = await session.scalar(
            select(func.count())
            .select_from(Incident)
            .where(
                Incident.chat_id == incident.chat_id,
                Incident.id != incident.id,
                Incident.message_id.is_(None),
                Incident.card_slot_at.is_(None),
                Incident.status != "resolved",
                ahead,
                _card_queued(),
            )
        )
        return int(count or 0)


def _card_queued() -> Exists:
    return exists().where(
        Job.kind == JobKind.SYNC_CARD.value,
        Job.key == Incident.id,
        Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
    )
