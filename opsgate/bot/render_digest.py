"""The storm digest: one line per incident whose card waits for the chat's budget.

Every line has its own bound, so a digest of ``LINES_PER_DIGEST`` lines fits one message
whatever the alerts carry (see ``tests/unit/test_render_digest.py``).
"""

from __future__ import annotations

from opsgate.bot.render import clip, e
from opsgate.services.chat import DigestEntry, DigestView

MAX_SEVERITY = 24
MAX_ALERTNAME = 64
_STATE = {
    "waiting": "⏳ card waiting",
    "card": "✅ card posted",
    "resolved": "🟢 resolved, no card needed",
}


def digest_html(digest: DigestView) -> str:
    waiting = sum(1 for entry in digest.entries if entry.state == "waiting")
    head = (
        f"🌩 <b>Alert storm</b>: {len(digest.entries)} incidents here, {waiting} waiting "
        f"for a card. Cards go out most severe first, {digest.cards_per_minute} a minute; "
        "<code>/card INC-…</code> posts one now, /incidents lists them all."
    )
    return "\n".join([head, "", *(_line(entry) for entry in digest.entries)])


def _line(entry: DigestEntry) -> str:
    severity = clip(entry.severity or "?", MAX_SEVERITY)
    name = clip(entry.alertname or "alert", MAX_ALERTNAME)
    state = _STATE.get(entry.state, e(entry.state))
    return f"• <code>{e(entry.incident_id)}</code> {severity} <b>{name}</b> · {state}"
