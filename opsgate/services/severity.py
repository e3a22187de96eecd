"""How urgent an alert's ``severity`` label is: the order cards go out in during a storm."""

from __future__ import annotations

from sqlalchemy import ColumnElement, case, func
from sqlalchemy.orm import InstrumentedAttribute

_RANKS = {"critical": 0, "page": 0, "high": 1, "error": 1, "warning": 2, "info": 3}
_UNRANKED = 4


def severity_rank(severity: str) -> int:
    """Lower goes first; an unknown severity goes after the known ones."""
    return _RANKS.get(severity.lower(), _UNRANKED)


def rank_column(severity: InstrumentedAttribute[str]) -> ColumnElement[int]:
    """:func:`severity_rank` of a severity column, in SQL."""
    return case(
        *((func.lower(severity) == name, rank) for name, rank in _RANKS.items()),
        else_=_UNRANKED,
    )
