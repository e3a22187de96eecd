"""Compact, versioned callback data, far below Telegram's 64 bytes.

``v1:ap:<approval-id>`` / ``v1:rj:<approval-id>`` on alert cards; ``v1:pg:<view>:<offset>``
on paged lists.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = "v1"
APPROVE = "ap"
REJECT = "rj"
PAGE = "pg"
WRONG_DIAGNOSIS = "wd"
MAX_BYTES = 64
PAGED_VIEWS = frozenset({"inc"})


@dataclass(frozen=True)
class CardAction:
    approve: bool
    approval_id: str


@dataclass(frozen=True)
class FeedbackAction:
    """ "Wrong diagnosis" under a result: a negative signal for the proposal."""

    approval_id: str


@dataclass(frozen=True)
class PageAction:
    view: str
    offset: int


def encode(action: CardAction | PageAction | FeedbackAction) -> str:
    if isinstance(action, PageAction):
        data = f"{VERSION}:{PAGE}:{action.view}:{action.offset}"
    elif isinstance(action, FeedbackAction):
        data = f"{VERSION}:{WRONG_DIAGNOSIS}:{action.approval_id}"
    else:
        data = f"{VERSION}:{APPROVE if action.approve else REJECT}:{action.approval_id}"
    if len(data.encode()) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
    return data


def decode(data: str | None) -> CardAction | PageAction | FeedbackAction | None:
    """None for anything this version did not write: old buttons, forged data."""
    if not data:
        return None
    parts = data.split(":")
    if len(parts) == 4 and parts[:2] == [VERSION, PAGE]:
        view, offset = parts[2], parts[3]
        if view in PAGED_VIEWS and offset.isdigit() and len(offset) <= 6:
            return PageAction(view, int(offset))
        return None
    if len(parts) != 3 or parts[0] != VERSION or parts[1] not in (APPROVE, REJECT, WRONG_DIAGNOSIS):
        return None
    approval_id = parts[2]
    if not approval_id.isalnum() or len(approval_id) > 32:
        return None
    if parts[1] == WRONG_DIAGNOSIS:
        return FeedbackAction(approval_id)
    return CardAction(parts[1] == APPROVE, approval_id)
