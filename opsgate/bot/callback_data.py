"""Compact, versioned callback data, far below Telegram's 64 bytes.

``v1:ap:<approval-id>`` / ``v1:rj:<approval-id>`` on alert cards; ``v1:wd:<approval-id>`` and
``v1:un:<approval-id>`` under a result; ``v1:pg:inc:<offset>`` under
/incidents, ``v1:pg:tl:<incident-id>:<offset>`` under /timeline and
``v1:pg:ev:<incident-id>:<page>`` under /evidence; ``v1:ev:<incident-id>`` on an agent's card.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from opsgate.services.ids import INCIDENT_ID

VERSION = "v1"
APPROVE = "ap"
REJECT = "rj"
PAGE = "pg"
WRONG_DIAGNOSIS = "wd"
UNDO = "un"
EVIDENCE = "ev"
MAX_BYTES = 64
MAX_OFFSET_DIGITS = 9


class PagedView(StrEnum):
    INCIDENTS = "inc"
    TIMELINE = "tl"
    # Its offset is a page number: the pages are cut from the evidence as it is rendered.
    EVIDENCE = "ev"


@dataclass(frozen=True)
class CardAction:
    approve: bool
    approval_id: str


@dataclass(frozen=True)
class FeedbackAction:
    """ "Wrong diagnosis" under a result: a negative signal for the proposal."""

    approval_id: str


@dataclass(frozen=True)
class UndoAction:
    """ "Undo" under a result: propose the inverse of that execution for approval."""

    approval_id: str


@dataclass(frozen=True)
class EvidenceAction:
    """ "Evidence" on an agent's card: the agent's full evidence, as a reply to the card."""

    incident_id: str


@dataclass(frozen=True)
class PageAction:
    view: PagedView
    offset: int
    # The incident whose timeline or evidence is paged; empty for /incidents.
    subject: str = ""


Action = CardAction | PageAction | FeedbackAction | UndoAction | EvidenceAction


def encode(action: Action) -> str:
    if isinstance(action, PageAction):
        where = f"{action.subject}:" if action.view != PagedView.INCIDENTS else ""
        data = f"{VERSION}:{PAGE}:{action.view}:{where}{action.offset}"
    elif isinstance(action, FeedbackAction):
        data = f"{VERSION}:{WRONG_DIAGNOSIS}:{action.approval_id}"
    elif isinstance(action, UndoAction):
        data = f"{VERSION}:{UNDO}:{action.approval_id}"
    elif isinstance(action, EvidenceAction):
        data = f"{VERSION}:{EVIDENCE}:{action.incident_id}"
    else:
        data = f"{VERSION}:{APPROVE if action.approve else REJECT}:{action.approval_id}"
    if len(data.encode()) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
    # A button whose data we would refuse on the tap is a bug here, not a stale button there.
    if decode(data) != action:
        raise ValueError(f"callback data that would not decode: {data!r}")
    return data


def decode(data: str | None) -> Action | None:
    """None for anything this version did not write: old buttons, forged data."""
    if not data:
        return None
    parts = data.split(":")
    if len(parts) >= 4 and parts[:2] == [VERSION, PAGE]:
        return _page(parts[2:])
    if len(parts) == 3 and parts[:2] == [VERSION, EVIDENCE]:
        return EvidenceAction(parts[2]) if INCIDENT_ID.match(parts[2]) else None
    if (
        len(parts) != 3
        or parts[0] != VERSION
        or parts[1] not in (APPROVE, REJECT, WRONG_DIAGNOSIS, UNDO)
    ):
        return None
    approval_id = parts[2]
    # ASCII only: str.isalnum also takes letters and digits of every script.
    if not (approval_id.isascii() and approval_id.isalnum()) or len(approval_id) > 32:
        return None
    if parts[1] == WRONG_DIAGNOSIS:
        return FeedbackAction(approval_id)
    if parts[1] == UNDO:
        return UndoAction(approval_id)
    return CardAction(parts[1] == APPROVE, approval_id)


def _page(parts: list[str]) -> PageAction | None:
    match parts:
        case [PagedView.INCIDENTS, offset]:
            view, subject = PagedView.INCIDENTS, ""
        case [PagedView.TIMELINE | PagedView.EVIDENCE as named, subject, offset] if (
            INCIDENT_ID.match(subject)
        ):
            view = PagedView(named)
        case _:
            return None
    # isdigit alone also accepts digits int() refuses, such as "²".
    if not (offset.isascii() and offset.isdigit()) or len(offset) > MAX_OFFSET_DIGITS:
        return None
    return PageAction(view, int(offset), subject)
