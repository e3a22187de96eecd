"""What stored input may hold: text that encodes, finite numbers, 64-bit integers, bounded depth.

JSON lets a client send things no database column or Telegram message can carry (a lone UTF-16
surrogate, NaN, an integer past 64 bits, nesting a thousand levels deep). Each is refused at
the door with a reason, so nothing later fails on it.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_storable(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError naming the first thing in ``value`` that cannot be stored."""
    # Iterative, so a deeply nested body cannot exhaust the interpreter's stack here.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise ValueError("an integer is outside the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)


def check_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid UTF-8 (it holds a lone surrogate)") from None
    return text


def printable(text: object) -> str:
    """``text`` as a string that always encodes: what an error message may safely echo."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")
