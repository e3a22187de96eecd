"""Compact, versioned callback data: ``v1:ap:<approval-id>`` stays far below Telegram's 64 bytes."""

from __future__ import annotations

from dataclasses import dataclass

VERSION = "v1"
APPROVE = "ap"
REJECT = "rj"
MAX_BYTES = 64


@dataclass(frozen=True)
class CardAction:
    approve: bool
    approval_id: str


def encode(action: CardAction) -> str:
    data = f"{VERSION}:{APPROVE if action.approve else REJECT}:{action.approval_id}"
    if len(data.encode()) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
    return data


def decode(data: str | None) -> CardAction | None:
    """None for anything this version did not write: old buttons, forged data."""
    if not data:
        return None
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != VERSION or parts[1] not in (APPROVE, REJECT):
        return None
    approval_id = parts[2]
    if not approval_id.isalnum() or len(approval_id) > 32:
        return None
    return CardAction(parts[1] == APPROVE, approval_id)
