"""Short random identifiers: readable in chat and small enough for callback data."""

import re
import secrets

# Crockford's alphabet: no I, L, O or U to misread at 3 a.m.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# What a user may type or a button may carry as an incident id.
# `\Z`, not `$`: an id followed by a newline is not an id.
INCIDENT_ID = re.compile(r"^INC-[0-9A-Z]{4,12}\Z")


def _token(length: int) -> str:
    # One read of the system's randomness for the whole id, not one per character (each
    # ``secrets.choice`` is a system call); 256 is a multiple of 32, so each byte's low five
    # bits pick a character uniformly.
    return "".join(_ALPHABET[byte & 31] for byte in secrets.token_bytes(length))


def new_incident_id() -> str:
    return f"INC-{_token(8)}"


def new_approval_id() -> str:
    return _token(10).lower()
