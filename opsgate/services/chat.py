"""The port through which the domain talks to a chat, and the views it hands over.

``services`` never imports Telegram: ``bot`` implements :class:`ChatPort` and renders the
views. The errors below are the only chat failures the domain reasons about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class ChatTarget:
    chat_id: int
    thread_id: int | None = None


@dataclass(frozen=True)
class MessageRef:
    chat_id: int
    message_id: int
    thread_id: int | None = None


@dataclass(frozen=True)
class AttemptLine:
    attempt: int
    outcome: str
    error: str
    http_status: int | None


@dataclass(frozen=True)
class RefireLine:
    """A group that fired again: its previous incident, how soon after it resolved, how often."""

    previous_incident_id: str
    seconds_after: float
    # Incidents of the group opened in the 24 h up to this one's, this one included.
    times_in_day: int
    # The previous incident's card, when it was posted: the line links to it.
    previous_card: MessageRef | None = None


@dataclass(frozen=True)
class SilenceLine:
    """The latest silence set from the card: who, until when, and whether it was lifted."""

    created_by: str
    ends_at: datetime
    active: bool
    expired_by: str = ""
    expired_at: datetime | None = None


@dataclass(frozen=True)
class CardView:
    """Everything an alert card shows, already decided; rendering only formats it."""

    incident_id: str
    incident_status: str
    severity: str
    alertname: str
    summary: str
    service: str
    namespace: str
    firing_count: int
    alert_count: int
    labels: dict[str, str]
    action: str | None = None
    action_refusal: str = ""
    risk: str | None = None
    blast_radius: str = ""
    # What the plan read from the target warns about (operation_specs).
    plan_warnings: tuple[str, ...] = ()
    # When the pending approval's plan was asked for, while it is not there yet.
    plan_pending_since: datetime | None = None
    # False while the cluster could not give the plan: nobody approves a change blind, so the
    # card offers Reject only until the plan is read again.
    approvable: bool = True
    approval_id: str | None = None
    approval_status: str | None = None
    required_approvals: int = 0
    approvers: tuple[str, ...] = ()
    # (who, why) for each signature the last quorum check no longer counted.
    lapsed: tuple[tuple[str, str], ...] = ()
    rejected_by: str = ""
    decision_note: str = ""
    expires_at: datetime | None = None
    execution_status: str | None = None
    attempts: tuple[AttemptLine, ...] = ()
    max_attempts: int = 0
    next_attempt_at: datetime | None = None
    retry_delay_seconds: float = 0
    result_detail: str = ""
    duration_seconds: float | None = None
    verification_status: str | None = None
    verification_detail: str = ""
    record: str = ""
    auto_approved: bool = False
    related_case: str = ""
    refire: RefireLine | None = None
    # When the earliest firing alert started, and where to look: the alert's source,
    # Alertmanager, the runbook; as the payload gave them, checked when rendered.
    firing_since: datetime | None = None
    source_url: str = ""
    alertmanager_url: str = ""
    runbook_url: str = ""
    # Who may sign under the policy in force: its roles, and the users holding one.
    approver_roles: tuple[str, ...] = ()
    eligible: tuple[str, ...] = ()
    # Who is on it, and the silence set from the card (services/acks.py, silences.py).
    acked_by: str = ""
    acked_at: datetime | None = None
    silence: SilenceLine | None = None
    # An Alertmanager incident with labels to match: the card offers to silence it.
    silenceable: bool = False
    # An AI agent's proposal: its name, rationale and first findings (the rest: /evidence).
    agent: str = ""
    rationale: str = ""
    findings: tuple[tuple[str, str], ...] = ()

    @property
    def offers_buttons(self) -> bool:
        return self.approval_id is not None and self.approval_status == "pending"


@dataclass(frozen=True)
class ResultView:
    incident_id: str
    action: str
    succeeded: bool
    detail: str
    attempts: int
    duration_seconds: float | None
    approvers: tuple[str, ...] = field(default=())
    alertname: str = ""
    service: str = ""
    namespace: str = ""
    approval_id: str = ""
    # A successful change with an inverse: the reply offers to propose it (operation_specs).
    undoable: bool = False


@dataclass(frozen=True)
class DigestEntry:
    incident_id: str
    severity: str
    alertname: str
    state: str  # "waiting", "card" (its card is posted) or "resolved" (it needs none)


@dataclass(frozen=True)
class DigestView:
    """The incidents of one digest message, in the order their cards go out."""

    entries: tuple[DigestEntry, ...]
    # Cards per minute the chat gets during a storm, so the reader knows how long to wait.
    cards_per_minute: int


@dataclass(frozen=True)
class TimelineLine:
    at: datetime
    actor: str
    kind: str
    status: str
    summary: str


class ChatError(Exception):
    """A chat call failed."""


class ChatRetryLater(ChatError):
    """The chat asked us to slow down (HTTP 429); try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"retry after {retry_after} s")
        self.retry_after = retry_after


class ChatUnavailable(ChatError):
    """Network trouble or a server error: the same call may succeed later."""


class ChatOutcomeUnknown(ChatUnavailable):
    """A send or edit whose request may have reached the chat and been carried out; only the
    answer was lost. Repeating a send blindly may post it twice."""


class ChatRejected(ChatError):
    """The chat refused the call for good (bad request, forbidden)."""


class ChatMoved(ChatRejected):
    """The group became a supergroup with a new id; the same call may go there."""

    def __init__(self, new_chat_id: int, message: str = "") -> None:
        super().__init__(message or f"chat moved to {new_chat_id}")
        self.new_chat_id = new_chat_id


class ChatGone(ChatRejected):
    """The bot was removed from the chat or blocked by the user."""


class ChatPort(Protocol):
    async def post_card(
        self, target: ChatTarget, card: CardView, *, on_request: bool = False
    ) -> MessageRef:
        """``on_request``: someone asked for this card (``/card``); it goes before new cards."""
        ...

    async def post_digest(self, target: ChatTarget, digest: DigestView) -> MessageRef: ...

    async def edit_digest(self, ref: MessageRef, digest: DigestView) -> None: ...

    async def edit_card(self, ref: MessageRef, card: CardView) -> None: ...

    async def mark_duplicate(self, ref: MessageRef, incident_id: str, live: MessageRef) -> None:
        """Turn a second card of one incident into a pointer to the live one, without buttons."""
        ...

    async def retire_card(self, ref: MessageRef, live: MessageRef) -> None:
        """Take the buttons off a card that is no longer the incident's; ``live`` is."""
        ...

    async def send_result(
        self, target: ChatTarget, reply_to: int | None, result: ResultView
    ) -> MessageRef:
        """Post the result, as a reply to the card when there is one (same forum topic)."""
        ...

    async def send_result_copy(self, target: ChatTarget, result: ResultView) -> MessageRef:
        """A copy of the result for a chat that follows the service: it waits behind every
        other message to that chat."""
        ...
