"""Risk levels. What each operation risks by default is part of its spec (operation_specs)."""

from __future__ import annotations

from enum import StrEnum


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Risk).index(self)


def parse_risk(value: str) -> Risk:
    try:
        return Risk(value.strip().lower())
    except ValueError:
        allowed = ", ".join(r.value for r in Risk)
        raise ValueError(f"risk must be one of {allowed}, not '{value}'") from None
