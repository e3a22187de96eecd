"""Result fan-out: a compact result to every chat and notifier that follows the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog

from opsgate.services import timeline
from opsgate.services.cards import result_view
from opsgate.services.chat import ChatPort, ChatRejected, ChatTarget, ResultView
from opsgate.services.execution import load_execution
from opsgate.services.job_kinds import NotifyJob
from opsgate.services.jobs import ClaimedJob, Lease
from opsgate.services.notifiers import Notifier, NotifierError
from opsgate.services.routing import NOTIFIER, TELEGRAM
from opsgate.services.storage.db import Database

log = structlog.get_logger(__name__)


class NotifierGone(Exception):
    pass


class NotifierLookup(Protocol):
    def get(self, name: str) -> Notifier | None: ...


class ResultFanout:
    def __init__(
        self,
        db: Database,
        chat: ChatPort,
        notifiers: NotifierLookup,
        *,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._chat = chat
        self._notifiers = notifiers
        self._on_failure = on_failure or (lambda _destination: None)

    async def notify(self, job: ClaimedJob[NotifyJob]) -> None:
        approval_id, destination = job.payload.approval_id, job.payload.destination
        async with self._db.transaction() as session:
            record = await load_execution(session, approval_id)
            if record is None:
                return
            incident = record.incident
            result = await result_view(session, record.approval, record.execution, incident)
        structlog.contextvars.bind_contextvars(incident_id=incident.id)
        bound = log.bind(approval_id=approval_id, destination=destination)
        await job.lease.ensure()
        try:
            await self._deliver(destination, result)
        except (ChatRejected, NotifierGone) as exc:
            # Permanent (the chat is gone or refuses the bot): counted, logged, not retried.
            self._on_failure(destination)
            bound.warning("result_notify_rejected", error=str(exc))
            await self._record(
                job.lease, incident.id, f"result not delivered to {destination}: {exc}", "warning"
            )
            return
        except NotifierError as exc:
            self._on_failure(destination)
            bound.warning("result_notify_failed", error=str(exc), attempt=job.attempts)
            raise
        bound.info("result_notified")
        await self._record(job.lease, incident.id, f"result sent to {destination}", "info")

    async def _deliver(self, destination: str, result: ResultView) -> None:
        if destination.startswith(TELEGRAM):
            chat_id = int(destination.removeprefix(TELEGRAM))
            await self._chat.send_result_copy(ChatTarget(chat_id), result)
            return
        name = destination.removeprefix(NOTIFIER)
        notifier = self._notifiers.get(name)
        if notifier is None:
            # The policy changed since the incident opened; retrying cannot help.
            raise NotifierGone(f"no notifier named {name} in the policy any more")
        await notifier.send(result)

    async def _record(self, lease: Lease, incident_id: str, summary: str, status: str) -> None:
        async with lease.transaction() as session:
            timeline.record(session, incident_id, "result_notified", summary, status=status)
