"""An AI agent's evidence in full, for ``/evidence`` (the card shows it compactly)."""

from __future__ import annotations

from html import escape
from typing import Any

from opsgate.bot.render import CARD_BUDGET, CUT, MAX_AGENT, MAX_FINDING_KEY, clip, units

MAX_EVIDENCE_TEXT = 1000
MAX_LOG = 600
MAX_LINK = 300


def evidence_html(incident_id: str, agent: str, evidence: dict[str, Any]) -> str:
    """Everything the agent sent, escaped and bounded (the caller packs it into messages)."""
    lines = [
        f"<b>Evidence for {escape(incident_id)}</b>",
        f"🤖 proposed by agent <b>{clip(agent, MAX_AGENT)}</b>",
    ]
    if evidence.get("rationale"):
        lines += ["", "<b>Rationale</b>", clip(evidence["rationale"], MAX_EVIDENCE_TEXT)]
    if evidence.get("text"):
        lines += ["", "<b>Notes</b>", clip(evidence["text"], MAX_EVIDENCE_TEXT)]
    findings = evidence.get("findings") or {}
    if findings:
        lines += ["", "<b>Findings</b>"]
        lines += [
            f"• {clip(k, MAX_FINDING_KEY)}: <code>{clip(v, 300)}</code>"
            for k, v in findings.items()
        ]
    for link in evidence.get("links") or []:
        text = str(link)
        if text.startswith(("http://", "https://")):
            lines.append(f'🔗 <a href="{escape(text)}">{clip(text, MAX_LINK)}</a>')
    for excerpt in evidence.get("logs") or []:
        lines += ["", f"<pre>{clip(excerpt, MAX_LOG)}</pre>"]
    return _fit(lines)


def _fit(lines: list[str]) -> str:
    """Whole lines while they fit one message; a marker says that some were left out."""
    kept: list[str] = []
    used = 0
    for line in lines:
        cost = units(line) + 1
        if used + cost > CARD_BUDGET - 40:
            kept.append(f"{CUT} (the rest did not fit)")
            break
        kept.append(line)
        used += cost
    return "\n".join(kept)
