"""Callback data of the silence and acknowledge buttons, beside ``callback_data``'s codes.

``v1:sl:<incident-id>:<hours>`` silences, ``v1:us:<incident-id>`` expires the silence early,
``v1:ak:<incident-id>`` acknowledges. The incident, not an approval, is what they act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsgate.bot.callback_data import MAX_BYTES, VERSION
from opsgate.services.ids import INCIDENT_ID

SILENCE = "sl"
UNSILENCE = "us"
ACK = "ak"
CODES = (SILENCE, UNSILENCE, ACK)
MAX_HOURS_DIGITS = 3


@dataclass(frozen=True)
class SilenceAction:
    incident_id: str
    hours: int


@dataclass(frozen=True)
class UnsilenceAction:
    incident_id: str


@dataclass(frozen=True)
class AckAction:
    incident_id: str


ResponseAction = SilenceAction | UnsilenceAction | AckAction


def encode(action: ResponseAction) -> str:
    match action:
        case SilenceAction(incident_id, hours):
            data = f"{VERSION}:{SILENCE}:{incident_id}:{hours}"
        case UnsilenceAction(incident_id):
            data = f"{VERSION}:{UNSILENCE}:{incident_id}"
        case AckAction(incident_id):
            data = f"{VERSION}:{ACK}:{incident_id}"
    if len(data.encode()) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
    if decode(data) != action:
        raise ValueError(f"callback data that would not decode: {data!r}")
    return data


def decode(data: str | None) -> ResponseAction | None:
    """None for anything this version did not write."""
    match (data or "").split(":"):
        case [v, code, incident_id, hours] if v == VERSION and code == SILENCE:
            if not (hours.isascii() and hours.isdigit()) or len(hours) > MAX_HOURS_DIGITS:
                return None
            action: ResponseAction = SilenceAction(incident_id, int(hours))
        case [v, code, incident_id] if v == VERSION and code == UNSILENCE:
            action = UnsilenceAction(incident_id)
        case [v, code, incident_id] if v == VERSION and code == ACK:
            action = AckAction(incident_id)
        case _:
            return None
    return action if INCIDENT_ID.match(action.incident_id) else None
