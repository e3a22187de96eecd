"""Every kind of durable job, in one table: its typed payload, its serial key, its coalescing.

A job's payload is stored as JSON and validated back into its model when the job is claimed,
so no handler parses strings. The serial key says which jobs must never run at the same time
(every edit of one card and its result reply; every learning update); coalescing keeps at most
one waiting job per key (a burst of card changes becomes one edit of the latest state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class JobKind(StrEnum):
    EXECUTE = "execute"
    SYNC_CARD = "sync_card"
    PUBLISH_RESULT = "publish_result"
    NOTIFY = "notify"
    VERIFY = "verify"
    LEARN = "learn"
    KNOWLEDGE = "knowledge"
    EXTRACT_PLAYBOOK = "extract_playbook"
    TELEGRAM_UPDATE = "telegram_update"
    PERIODIC = "periodic"
    DIGEST = "digest"
    PLAN = "plan"


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IncidentJob(Payload):
    incident_id: str


class ApprovalJob(Payload):
    approval_id: str


class ResultJob(Payload):
    approval_id: str
    incident_id: str


class NotifyJob(Payload):
    approval_id: str
    destination: str


class LearnJob(Payload):
    approval_id: str
    event: str


class TelegramUpdateJob(Payload):
    """An update Telegram delivered to the webhook, kept until it has been handled."""

    update_id: int
    update: dict[str, Any]
    # Messages of one chat are handled in order; taps are not held behind anything.
    chat_id: int | None = None
    is_tap: bool = False


class DigestJob(Payload):
    chat_id: int


class PeriodicJob(Payload):
    task: str


P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class JobSpec(Generic[P]):
    kind: JobKind
    payload: type[P]
    key: Callable[[P], str]
    """The job's identity: what logs show and what coalescing and look-ups compare."""
    serial_key: Callable[[P], str]
    coalesce: bool = False


def _card(incident_id: str) -> str:
    return f"card:{incident_id}"


EXECUTE = JobSpec(
    JobKind.EXECUTE, ApprovalJob, lambda p: p.approval_id, lambda p: f"execute:{p.approval_id}"
)
SYNC_CARD = JobSpec(
    JobKind.SYNC_CARD,
    IncidentJob,
    lambda p: p.incident_id,
    lambda p: _card(p.incident_id),
    coalesce=True,
)
# Serialised with the card's edits, so the final edit is never overtaken by an older state.
PUBLISH_RESULT = JobSpec(
    JobKind.PUBLISH_RESULT, ResultJob, lambda p: p.approval_id, lambda p: _card(p.incident_id)
)
# Serialised per destination: a receiver that is down delays only itself.
NOTIFY = JobSpec(
    JobKind.NOTIFY,
    NotifyJob,
    lambda p: f"{p.approval_id}|{p.destination}",
    lambda p: f"destination:{p.destination}",
)
VERIFY = JobSpec(
    JobKind.VERIFY, ApprovalJob, lambda p: p.approval_id, lambda p: f"verify:{p.approval_id}"
)
# Learning updates shared counters; one at a time keeps them exact without row-lock races.
LEARN = JobSpec(
    JobKind.LEARN, LearnJob, lambda p: f"{p.approval_id}|{p.event}", lambda p: "learning"
)
KNOWLEDGE = JobSpec(
    JobKind.KNOWLEDGE,
    ApprovalJob,
    lambda p: p.approval_id,
    lambda p: f"knowledge:{p.approval_id}",
)
EXTRACT_PLAYBOOK = JobSpec(
    JobKind.EXTRACT_PLAYBOOK,
    IncidentJob,
    lambda p: p.incident_id,
    lambda p: f"playbook:{p.incident_id}",
    coalesce=True,
)
TELEGRAM_UPDATE = JobSpec(
    JobKind.TELEGRAM_UPDATE,
    TelegramUpdateJob,
    lambda p: str(p.update_id),
    lambda p: f"update:{p.update_id}" if p.is_tap or p.chat_id is None else f"chat:{p.chat_id}",
)
PERIODIC = JobSpec(
    JobKind.PERIODIC,
    PeriodicJob,
    lambda p: p.task,
    lambda p: f"periodic:{p.task}",
    # One row per task for ever: it keeps its coalescing key while it runs (see jobs._claim).
    coalesce=True,
)
# One digest job per chat at a time, and one waiting: a burst of new lines is one edit.
DIGEST = JobSpec(
    JobKind.DIGEST,
    DigestJob,
    lambda p: str(p.chat_id),
    lambda p: f"digest:{p.chat_id}",
    coalesce=True,
)

# Reads the target of a proposed action and dry-runs it, for the card.
PLAN = JobSpec(
    JobKind.PLAN, ApprovalJob, lambda p: p.approval_id, lambda p: f"plan:{p.approval_id}"
)

SPECS: dict[JobKind, JobSpec[Any]] = {
    spec.kind: spec
    for spec in (
        EXECUTE,
        SYNC_CARD,
        PUBLISH_RESULT,
        NOTIFY,
        VERIFY,
        LEARN,
        KNOWLEDGE,
        EXTRACT_PLAYBOOK,
        TELEGRAM_UPDATE,
        PERIODIC,
        DIGEST,
        PLAN,
    )
}
