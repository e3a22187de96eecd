"""HTML for the chat commands. Escaped, and split or paged under Telegram's limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from opsgate.bot.markdown_html import markdown_html
from opsgate.bot.render import (
    CUT,
    MAX_MESSAGE,
    clip,
    clock,
    duration,
    e,
    pack,
    status_icon,
    took,
    units,
)
from opsgate.services.cards import RefusedCards, RequestedCard
from opsgate.services.health import HealthReport
from opsgate.services.knowledge import SearchHit
from opsgate.services.playbooks import PlaybookLine
from opsgate.services.queries import AuditRow, IncidentPage, PendingRow
from opsgate.services.timeline import TimelinePage

INCIDENTS_PAGE_SIZE = 8
TIMELINE_PAGE_SIZE = 30
STATUS_CHATS_SHOWN = 10
# Caps, in Telegram's units of escaped text, on values that come from outside: alert labels,
# API error texts, user names. They keep every line short enough for ``pack``.
NAME = 80
ACTION = 300
DETAIL = 300
KIND = 32
ACTOR = 40

COMMANDS = [
    ("incidents", "Open incidents, newest first"),
    ("timeline", "Timeline of an incident: /timeline INC-…"),
    ("card", "Post an incident's card now: /card INC-…"),
    ("pending", "Approvals waiting for a decision"),
    ("audit", "What ran, approved by whom: /audit [INC-…]"),
    ("kb", "Search past incident cases: /kb words"),
    ("evidence", "An agent's full evidence for its proposal: /evidence INC-…"),
    ("playbooks", "Learned playbooks and their record"),
    ("status", "Bot health"),
    ("whoami", "Your Telegram id and roles"),
    ("help", "What opsgate does here"),
]
VIEWER_COMMANDS = (
    "incidents",
    "timeline",
    "card",
    "audit",
    "kb",
    "evidence",
    "playbooks",
    "status",
)
APPROVER_COMMANDS = ("pending",)
OPEN_COMMANDS = ("whoami", "help")


def age(since: datetime, now: datetime | None = None) -> str:
    return duration(((now or datetime.now(UTC)) - since).total_seconds())


def incidents_page(page: IncidentPage, now: datetime | None = None) -> str:
    if page.total == 0:
        return "🟢 <b>No open incidents.</b>"
    first, last = page.offset + 1, page.offset + len(page.rows)
    lines = [f"🔥 <b>Open incidents</b> {first}-{last} of {page.total}"]
    for row in page.rows:
        where = " · ".join(clip(p, NAME) for p in (row.service, row.namespace) if p)
        lines.append(
            f"<code>{e(row.id)}</code> {clip(row.severity or '?', KIND)} "
            f"<b>{clip(row.alertname or '?', NAME)}</b>"
            f"{f' · {where}' if where else ''} · {age(row.created_at, now)} · "
            f"{clip(row.approval, KIND)}"
            + (f" · 👀 {clip(row.acked_by, KIND)}" if row.acked_by else "")
            + (f" · 🔕 until {clock(row.silenced_until)}" if row.silenced_until else "")
        )
    return "\n".join(lines)


def pending_messages(rows: list[PendingRow], now: datetime | None = None) -> list[str]:
    lines = [
        f"<code>{e(r.incident_id)}</code> <b>{clip(r.alertname or '?', NAME)}</b>"
        f" · risk {clip(r.risk, KIND)}\n"
        f"  <code>{clip(r.action, ACTION)}</code>\n"
        f"  signed {len(r.approvers)}/{r.required}: {_names(r.approvers)}"
        f" · closes {clock(r.expires_at)} ({_left(r.expires_at, now)} left)"
        for r in rows
    ]
    return pack(
        "⏳ <b>Pending approvals</b>",
        lines,
        empty="Nothing is waiting for a decision.",
        rest="each has its card in the chat; /pending again once these are decided",
    )


def audit_messages(rows: list[AuditRow], incident_id: str | None) -> list[str]:
    header = (
        f"🧾 <b>Audit</b> <code>{e(incident_id)}</code>"
        if incident_id
        else "🧾 <b>Audit</b> — latest executions"
    )
    icon = {"succeeded": "✅", "failed": "❌"}
    lines = [
        f"{icon.get(r.status, '⚙️')} <code>{e(r.incident_id)}</code> "
        f"<code>{clip(r.action, ACTION)}</code>\n"
        f"  {clip(r.status, KIND)} · approved by {_names(r.approvers)}"
        f" · {r.attempts} attempt(s){took(r.duration_seconds)}"
        + (f" · {clock(r.finished_at)}" if r.finished_at else "")
        + (f"\n  {clip(r.detail, DETAIL)}" if r.detail else "")
        + (f"\n  verification {clip(r.verification, DETAIL)}" if r.verification else "")
        for r in rows
    ]
    rest = (
        f"<code>/timeline {e(incident_id)}</code> has every step"
        if incident_id
        else "<code>/audit INC-…</code> shows one incident"
    )
    return pack(header, lines, empty="Nothing has run.", rest=rest)


def knowledge_html(words: str, hits: list[SearchHit]) -> str:
    header = f"📚 <b>Knowledge</b> for <i>{clip(words, 100)}</i>"
    if not hits:
        return f"{header}\nNothing found."
    lines = [header]
    for hit in hits:
        lines.append(
            f"<b>{clip(hit.title, 200)}</b>\n  <code>{clip(hit.incident_id, KIND)}</code>"
            f" · {clip(hit.status, KIND)}\n{markdown_html(hit.snippet, DETAIL)}"
        )
    return "\n".join(lines)


def playbooks_messages(lines: list[PlaybookLine]) -> list[str]:
    icon = {"draft": "📝", "approved": "✅"}
    rendered = [
        f"{icon.get(p.status, '•')} <b>#{p.id}</b> {clip(p.status, KIND)} · "
        f"<b>{clip(p.alertname, NAME)}</b> ({clip(p.match_key, ACTION)})\n"
        f"  <code>{clip(p.action, ACTION)}</code> · {clip(p.record, DETAIL)}"
        for p in lines
    ]
    header = "📒 <b>Playbooks</b> (admins: /playbook approve N, /playbook retire N)"
    rest = "those are the newest; retiring unused ones (/playbook retire N) shortens the list"
    return pack(header, rendered, empty="None learned yet.", rest=rest)


def status_html(report: HealthReport) -> str:
    last = (
        f"{clock(report.last_alert_at, seconds=True)} ({age(report.last_alert_at)} ago)"
        if report.last_alert_at
        else "none since start"
    )
    lines = [
        f"🩺 <b>opsgate</b> {e(report.version)}",
        f"uptime: {duration(report.uptime_seconds)}",
        f"database: {clip(report.database, DETAIL)}",
        f"Kubernetes API: {clip(report.kubernetes, DETAIL)}",
        f"job queue: {report.queue_depth if report.queue_depth is not None else 'unknown'}",
        f"last alert received: {last}",
    ]
    if report.inactive_chats:
        lines.append("inactive chats:")
        shown = report.inactive_chats[:STATUS_CHATS_SHOWN]
        lines.extend(f"  <code>{c.chat_id}</code>: {clip(c.reason, 200)}" for c in shown)
        if left := len(report.inactive_chats) - len(shown):
            lines.append(f"  {CUT} {left:,} more; the log names each one (chat_inactive)")
    else:
        lines.append("inactive chats: none")
    lines.extend(_refused_cards_lines(report.refused_cards))
    return "\n".join(lines)


def _refused_cards_lines(refused: RefusedCards | None) -> list[str]:
    if refused is None:
        return ["cards refused by their chat: unknown (no database)"]
    if not refused.total:
        return ["cards refused by their chat: none"]
    lines = [f"cards refused by their chat: {refused.total:,}"]
    lines.extend(
        f"  <code>{e(c.incident_id)}</code> in <code>{c.chat_id}</code>, "
        f"{clock(c.at)}: {clip(c.reason, 100)}"
        for c in refused.cards
    )
    if left := refused.total - len(refused.cards):
        lines.append(f"  {CUT} {left:,} more; the log names each one (card_post_rejected)")
    return lines


def help_html(*, member: bool, approver: bool) -> str:
    lines = [
        "🚦 <b>opsgate</b> posts an alert card with a proposed fix; authorised engineers tap "
        "<b>Approve</b> or <b>Reject</b>; once enough approve, it runs the fix on Kubernetes "
        "and replies under the alert with the result.",
        "",
        "<b>Your commands</b>",
    ]
    allowed = [
        *(APPROVER_COMMANDS if approver else ()),
        *(VIEWER_COMMANDS if member else ()),
        *OPEN_COMMANDS,
    ]
    descriptions = dict(COMMANDS)
    lines.extend(f"/{name} — {e(descriptions[name])}" for name in allowed)
    if approver:
        lines.append("You may also tap Approve / Reject on cards your roles cover.")
    elif not member:
        lines.append("You are not in the opsgate policy yet: send /whoami to an admin.")
    return "\n".join(lines)


def requested_card_html(requested: RequestedCard, asked_in: int) -> str | None:
    """The answer to ``/card``; None when the card just posted here is the answer."""
    incident = e(requested.incident_id)
    card = requested.card
    if card is None:
        return f"No incident {incident} is known."
    if card.chat_id != asked_in:
        return f"The card of {incident} is in its alert chat."
    if requested.posted:
        return None
    return f"This is the card of {incident}."


def whoami_html(
    user_id: int,
    username: str | None,
    roles: list[str],
    *,
    entry_roles: list[str],
    chat_id: int | None = None,
    topic: int | None = None,
) -> str:
    """``chat_id``: asked in a group, whose id is what OPSGATE_ALERT_CHAT_ID wants.
    ``entry_roles``: the roles the pasteable policy line names (see ``Policy.entry_roles``)."""
    name = f"@{e(username)}" if username else "(no username)"
    role_text = ", ".join(e(r) for r in roles) if roles else "none — not in the policy"
    entry = e(policy_entry(user_id, username, entry_roles))
    lines = [
        f"👤 {name}",
        f"Telegram id: <code>{user_id}</code>",
        f"roles: {role_text}",
        f"Policy entry (under <code>users:</code>): <code>{entry}</code>",
    ]
    if not roles and entry_roles:
        lines.append("(that role allows least of those defined; an admin may pick another)")
    if chat_id is not None:
        lines.append(f"This chat's id: <code>{chat_id}</code>")
        lines.append(f"Alert cards here: <code>OPSGATE_ALERT_CHAT_ID={chat_id}</code>")
    if chat_id is not None and topic is not None:
        lines.append(
            f"This topic's id: <code>{topic}</code> (<code>OPSGATE_ALERT_THREAD_ID={topic}</code>)"
        )
    return "\n".join(lines)


def policy_entry(user_id: int, username: str | None, roles: list[str]) -> str:
    """One ``users:`` item in YAML flow style. JSON quoting is valid YAML, so any name or
    role pastes as is."""
    quoted = ", ".join(json.dumps(r) for r in roles)
    return f"- {{id: {user_id}, name: {json.dumps(username or 'you')}, roles: [{quoted}]}}"


def timeline_page(page: TimelinePage) -> str:
    """One message whatever the events say: the page's summaries share what the limit leaves,
    and only the longest are cut."""
    title = f"🗒 <b>Timeline</b> <code>{e(page.incident_id)}</code>"
    if not page.events:
        return f"{title}\nNo events recorded."
    first, last = page.offset + 1, page.offset + len(page.events)
    header = f"{title} · events {first:,}-{last:,} of {page.total:,}, newest first"
    prefixes = [
        f"{clock(ev.at, seconds=True)} {status_icon(ev.status)} <b>{clip(ev.kind, KIND)}</b>"
        f" · {clip(ev.actor, ACTOR)}: "
        for ev in page.events
    ]
    room = MAX_MESSAGE - units(header) - sum(1 + units(p) for p in prefixes)
    cap = _fair_share([units(e(ev.summary)) for ev in page.events], room)
    lines = [p + clip(ev.summary, cap) for p, ev in zip(prefixes, page.events, strict=True)]
    return "\n".join([header, *lines])


def _fair_share(sizes: list[int], room: int) -> int:
    """The largest cap such that every size, cut to it, still fits ``room`` in sum."""
    low, high = 0, max(sizes, default=0)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(size, middle) for size in sizes) <= room:
            low = middle
        else:
            high = middle - 1
    return low


def _names(names: list[str]) -> str:
    return clip(", ".join(names), DETAIL) if names else "—"


def _left(until: datetime, now: datetime | None) -> str:
    return duration((until - (now or datetime.now(UTC))).total_seconds())
