"""An AI agent's evidence in full, for ``/evidence`` and the card's Evidence button.

The card shows the evidence compactly; here nothing is cut. An agent may send 16 KB, which
escaped may be four times as many units, so the evidence is cut into pages of one message
each, shown one at a time in a message the page buttons edit (as /timeline is paged).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opsgate.bot.render import CARD_BUDGET, MAX_AGENT, clip, e, units

# A page's body, leaving room for its header line.
PAGE_BUDGET = CARD_BUDGET - 150
# One piece of a section, leaving room for the section's heading on the same page.
PIECE_BUDGET = PAGE_BUDGET - 150
# What becomes a tappable link: http(s) only (never a javascript: URL), and no control
# characters, which would make Telegram refuse the whole message.
_HREF = re.compile(r"https?://[^\s<>\"'`\x00-\x1f\x7f]+", re.IGNORECASE)


@dataclass(frozen=True)
class Piece:
    """A line (or lines) of HTML, whole on one page; ``section`` names what it belongs to."""

    html: str
    section: str | None = None


def evidence_pages(incident_id: str, agent: str, evidence: dict[str, Any]) -> list[str]:
    """Everything the agent sent, escaped, on as many pages as it takes (at least one)."""
    pieces = list(_pieces(agent, evidence))
    bodies = _pack(pieces)
    title = f"🧾 <b>Evidence</b> <code>{e(incident_id)}</code>"
    if len(bodies) == 1:
        return [f"{title}\n{bodies[0]}"]
    return [
        f"{title} · page {number} of {len(bodies)}\n{body}"
        for number, body in enumerate(bodies, start=1)
    ]


def _pieces(agent: str, evidence: dict[str, Any]) -> Iterator[Piece]:
    yield Piece(f"🤖 proposed by agent <b>{clip(agent, MAX_AGENT)}</b>")
    for key, heading in (("rationale", "Rationale"), ("text", "Notes")):
        if evidence.get(key):
            for chunk in _chunks(str(evidence[key]), PIECE_BUDGET):
                yield Piece(chunk, heading)
    for key, value in (evidence.get("findings") or {}).items():
        # A finding is at most 100 + 500 characters: escaped, it still fits a piece.
        line = f"• {e(str(key))}: <code>{e(str(value))}</code>"
        if units(line) > PIECE_BUDGET:
            line = f"• {clip(key, 200)}: <code>{clip(value, PIECE_BUDGET - 220)}</code>"
        yield Piece(line, "Findings")
    for link in evidence.get("links") or []:
        text = str(link)
        if _HREF.fullmatch(text):
            href = e(text)
            room = max(40, PIECE_BUDGET - units(href) - 20)
            yield Piece(f'🔗 <a href="{href}">{clip(text, room)}</a>', "Links")
        else:
            yield Piece(f"🔗 <code>{clip(text, PIECE_BUDGET - 20)}</code>", "Links")
    for number, excerpt in enumerate(evidence.get("logs") or [], start=1):
        for chunk in _chunks(str(excerpt), PIECE_BUDGET - 20):
            yield Piece(f"<pre>{chunk}</pre>", f"Log {number}")


def _chunks(text: str, limit: int) -> list[str]:
    """``text`` escaped, in pieces of at most ``limit`` units, cut between lines when a line
    fits, else between characters (never inside an entity)."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        for part in _split_line(e(line), line, limit):
            if current and units(current) + units(part) > limit:
                chunks.append(current)
                current = ""
            current += part
    if current:
        chunks.append(current)
    return [chunk.rstrip("\n") or " " for chunk in chunks]


def _split_line(escaped: str, line: str, limit: int) -> list[str]:
    if units(escaped) <= limit:
        return [escaped]
    parts: list[str] = []
    current = ""
    for char in line:
        piece = e(char)
        if units(current) + units(piece) > limit:
            parts.append(current)
            current = ""
        current += piece
    if current:
        parts.append(current)
    return parts


def _pack(pieces: list[Piece]) -> list[str]:
    """Pieces onto pages in order; a section's heading goes before its first piece, and
    again, marked as continued, on each further page it runs onto."""
    pages: list[list[str]] = []
    lines: list[str] = []
    used = 0
    section: str | None = None
    for piece in pieces:
        heading: str | None = None
        if piece.section is not None and piece.section != section:
            heading = f"\n<b>{e(piece.section)}</b>"
        cost = units(piece.html) + 1 + (units(heading) + 1 if heading else 0)
        if lines and used + cost > PAGE_BUDGET:
            pages.append(lines)
            lines, used = [], 0
            if heading is None and piece.section is not None:
                heading = f"<b>{e(piece.section)}</b> <i>(continued)</i>"
                cost += units(heading) + 1
        if heading is not None:
            lines.append(heading)
        lines.append(piece.html)
        used += cost
        section = piece.section
    if lines:
        pages.append(lines)
    return ["\n".join(page).lstrip("\n") for page in pages] or ["No evidence was sent."]
