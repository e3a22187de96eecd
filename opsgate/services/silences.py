"""Silences from the card: "🔕 1 h" / "🔕 4 h" make one in Alertmanager, "🔔" expires it early.

Alertmanager is called while the tap waits for its answer (the client's timeout keeps that
inside Telegram's window), so the tapper learns at once whether it worked. A tap either leaves
a silence in Alertmanager and its row here, or neither:

- the row is claimed (written without Alertmanager's id) before the call, under the incident's
  lock, so a second tap meanwhile is told a silence is being set instead of making another;
- a call that failed deletes the claim; a claim whose process died mid-call is dead after
  ``STALE_CLAIM`` and the next tap replaces it;
- a silence Alertmanager made but that could not be recorded is expired again at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opsgate.services import timeline
from opsgate.services.alertmanager_api import (
    EXPIRED,
    AlertmanagerClient,
    AlertmanagerError,
    SilenceRequest,
    is_http_url,
)
from opsgate.services.approvals import Tapper
from opsgate.services.card_taps import TapAnswer, locked_card_incident
from opsgate.services.chat import MessageRef, SilenceLine
from opsgate.services.job_kinds import SYNC_CARD, IncidentJob
from opsgate.services.jobs import enqueue
from opsgate.services.policy import AlertPermission
from opsgate.services.policy_source import PolicySource
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident, Silence, utcnow

log = structlog.get_logger(__name__)

# The lengths the card offers, in hours; callback data carries one of them.
SILENCE_HOURS = (1, 4)
# Longer than any Alertmanager call may take (the timeout setting is at most 10 s).
STALE_CLAIM = timedelta(seconds=60)
ALERTMANAGER_SOURCE = "alertmanager"


def may_silence(incident: Incident) -> bool:
    """An Alertmanager group with labels to match; the card offers silences only then."""
    return incident.source == ALERTMANAGER_SOURCE and bool(incident.labels)


async def latest_silence(session: AsyncSession, incident_id: str) -> SilenceLine | None:
    """What the card shows: the incident's latest silence that Alertmanager confirmed."""
    row = await session.scalar(
        select(Silence)
        .where(Silence.incident_id == incident_id, Silence.alertmanager_id.is_not(None))
        .order_by(Silence.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    active = row.expired_at is None and row.ends_at > utcnow()
    return SilenceLine(row.created_by, row.ends_at, active, row.expired_by, row.expired_at)


class SilenceService:
    def __init__(
        self,
        db: Database,
        alertmanager: AlertmanagerClient,
        policy: PolicySource,
        *,
        alertmanager_url: str | None = None,
    ) -> None:
        """``alertmanager_url``: where silences go; None, to the incident's payload's
        ``externalURL``."""
        self._db = db
        self._am = alertmanager
        self._policy = policy
        self._url = alertmanager_url

    async def silence(
        self, incident_id: str, tapper: Tapper, hours: int, *, origin: MessageRef | None
    ) -> TapAnswer:
        if hours not in SILENCE_HOURS:
            return TapAnswer("This button is not valid any more.", True)
        now = utcnow()
        ends_at = now + timedelta(hours=hours)
        async with self._db.transaction() as session:
            claimed = await self._claim(session, incident_id, tapper, origin, now, ends_at)
        if isinstance(claimed, TapAnswer):
            self._log_tap("silence_tap", incident_id, tapper, claimed)
            return claimed
        claim_id, url, request = claimed
        try:
            silence_id = await self._am.create_silence(url, request)
        except AlertmanagerError as exc:
            async with self._db.transaction() as session:
                await session.execute(delete(Silence).where(Silence.id == claim_id))
            log.warning("silence_failed", incident_id=incident_id, url=url, error=str(exc))
            return TapAnswer(f"{exc}. Nothing was silenced.", True, incident_id=incident_id)
        try:
            async with self._db.transaction() as session:
                await self._record(session, incident_id, claim_id, silence_id, tapper, request)
        except Exception:
            # Alertmanager has a silence nobody here knows of: take it back, so the tap left
            # nothing half-done.
            log.exception("silence_record_failed", incident_id=incident_id, silence_id=silence_id)
            await self._take_back(url, silence_id)
            return TapAnswer(
                "opsgate could not record the silence, so it was lifted again. Try again.",
                True,
                incident_id=incident_id,
            )
        answer = TapAnswer(
            f"🔕 Silenced for {hours} h, until {_clock(ends_at)}.",
            False,
            changed=True,
            incident_id=incident_id,
        )
        self._log_tap("silence_tap", incident_id, tapper, answer, silence_id=silence_id)
        return answer

    async def expire(
        self, incident_id: str, tapper: Tapper, *, origin: MessageRef | None
    ) -> TapAnswer:
        async with self._db.transaction() as session:
            found = await self._active(session, incident_id, tapper, origin)
        if isinstance(found, TapAnswer):
            self._log_tap("unsilence_tap", incident_id, tapper, found)
            return found
        row_id, url, silence_id = found
        try:
            await self._am.expire_silence(url, silence_id)
        except AlertmanagerError as exc:
            # The call may have failed after Alertmanager expired it, or someone expired it
            # there: its state says whether it is gone.
            if not await self._gone(url, silence_id):
                log.warning("unsilence_failed", incident_id=incident_id, error=str(exc))
                return TapAnswer(
                    f"{exc}. The silence is still in place.", True, incident_id=incident_id
                )
        async with self._db.transaction() as session:
            lifted = await session.execute(
                update(Silence)
                .where(Silence.id == row_id, Silence.expired_at.is_(None))
                .values(expired_at=utcnow(), expired_by=tapper.display)
            )
            if lifted.rowcount == 1:  # type: ignore[attr-defined]
                timeline.record(
                    session,
                    incident_id,
                    "silence_expired",
                    f"silence {silence_id} expired early from the card",
                    actor=tapper.display,
                )
                await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident_id))
        answer = TapAnswer("🔔 Silence expired.", False, changed=True, incident_id=incident_id)
        self._log_tap("unsilence_tap", incident_id, tapper, answer, silence_id=silence_id)
        return answer

    async def _claim(
        self,
        session: AsyncSession,
        incident_id: str,
        tapper: Tapper,
        origin: MessageRef | None,
        now: datetime,
        ends_at: datetime,
    ) -> tuple[int, str, SilenceRequest] | TapAnswer:
        incident = await locked_card_incident(session, incident_id, origin)
        if isinstance(incident, TapAnswer):
            return incident
        refused = self._refusal(tapper, incident)
        if refused is not None:
            return refused
        if not may_silence(incident):
            return _alert(incident_id, "This incident has no Alertmanager labels to silence.")
        url = self._url or incident.external_url
        if not is_http_url(url):
            return _alert(
                incident_id,
                "No Alertmanager to silence in: set OPSGATE_ALERTMANAGER_URL, or send "
                "alerts with an externalURL.",
            )
        # A claim whose process died mid-call blocks nothing.
        await session.execute(
            delete(Silence).where(
                Silence.incident_id == incident_id,
                Silence.alertmanager_id.is_(None),
                Silence.created_at < now - STALE_CLAIM,
            )
        )
        current = await session.scalar(
            select(Silence)
            .where(
                Silence.incident_id == incident_id,
                Silence.expired_at.is_(None),
                or_(Silence.alertmanager_id.is_(None), Silence.ends_at > now),
            )
            .order_by(Silence.id.desc())
            .limit(1)
        )
        if current is not None:
            if current.alertmanager_id is None:
                return _alert(incident_id, f"{current.created_by} is setting a silence right now.")
            return _alert(
                incident_id,
                f"Already silenced until {_clock(current.ends_at)} by {current.created_by}.",
            )
        matchers = {str(k): str(v) for k, v in incident.labels.items()}
        row = Silence(
            incident_id=incident_id,
            alertmanager_url=url,
            matchers=matchers,
            created_by=tapper.display,
            created_by_id=tapper.user_id,
            created_at=now,
            ends_at=ends_at,
            expired_by="",
        )
        session.add(row)
        await session.flush()
        request = SilenceRequest(
            matchers=matchers,
            starts_at=now,
            ends_at=ends_at,
            created_by=tapper.display,
            comment=f"opsgate incident {incident_id}: silenced from the Telegram card",
        )
        return row.id, url, request

    async def _record(
        self,
        session: AsyncSession,
        incident_id: str,
        claim_id: int,
        silence_id: str,
        tapper: Tapper,
        request: SilenceRequest,
    ) -> None:
        stored = await session.execute(
            update(Silence)
            .where(Silence.id == claim_id, Silence.alertmanager_id.is_(None))
            .values(alertmanager_id=silence_id)
        )
        if stored.rowcount != 1:  # type: ignore[attr-defined]
            raise RuntimeError(f"the claim of silence {silence_id} is gone")
        timeline.record(
            session,
            incident_id,
            "silenced",
            f"silenced in Alertmanager until {_clock(request.ends_at)} "
            f"(silence {silence_id}, {len(request.matchers)} matchers)",
            actor=tapper.display,
        )
        await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident_id))

    async def _active(
        self, session: AsyncSession, incident_id: str, tapper: Tapper, origin: MessageRef | None
    ) -> tuple[int, str, str] | TapAnswer:
        incident = await locked_card_incident(session, incident_id, origin)
        if isinstance(incident, TapAnswer):
            return incident
        refused = self._refusal(tapper, incident)
        if refused is not None:
            return refused
        row = await session.scalar(
            select(Silence)
            .where(
                Silence.incident_id == incident_id,
                Silence.alertmanager_id.is_not(None),
                Silence.expired_at.is_(None),
            )
            .order_by(Silence.id.desc())
            .limit(1)
        )
        if row is None or row.alertmanager_id is None:
            return _alert(incident_id, "No silence from this card is in place.")
        if row.ends_at <= utcnow():
            # The card still offers the button until its next edit.
            await enqueue(session, SYNC_CARD, IncidentJob(incident_id=incident_id))
            return _alert(incident_id, f"The silence ended at {_clock(row.ends_at)} already.")
        return row.id, row.alertmanager_url, row.alertmanager_id

    def _refusal(self, tapper: Tapper, incident: Incident) -> TapAnswer | None:
        decision = self._policy.current().may_handle_alert(
            tapper.user_id, AlertPermission.SILENCE, incident.namespace
        )
        return None if decision.allowed else _alert(incident.id, decision.reason)

    async def _gone(self, url: str, silence_id: str) -> bool:
        try:
            state = await self._am.silence_state(url, silence_id)
        except AlertmanagerError:
            return False
        return state is None or state == EXPIRED

    async def _take_back(self, url: str, silence_id: str) -> None:
        try:
            await self._am.expire_silence(url, silence_id)
        except AlertmanagerError as exc:
            log.error("silence_orphaned", silence_id=silence_id, url=url, error=str(exc))

    @staticmethod
    def _log_tap(
        event: str, incident_id: str, tapper: Tapper, answer: TapAnswer, **extra: object
    ) -> None:
        log.info(
            event,
            incident_id=incident_id,
            user_id=tapper.user_id,
            changed=answer.changed,
            answer=answer.text,
            **extra,
        )


def _alert(incident_id: str, text: str) -> TapAnswer:
    return TapAnswer(text, True, incident_id=incident_id)


def _clock(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M UTC")
