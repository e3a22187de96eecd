"""HTML for the chat commands. Escaped, and split or paged under Telegram's limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from opsgate.bot.render import clock, e, pack, took
from opsgate.services.health import HealthReport
from opsgate.services.knowledge import SearchHit
from opsgate.services.playbooks import PlaybookLine
from opsgate.services.queries import AuditRow, IncidentPage, PendingRow

INCIDENTS_PAGE_SIZE = 8

COMMANDS = [
    ("incidents", "Open incidents, newest first"),
    ("timeline", "Timeline of an incident: /timeline INC-…"),
    ("pending", "Approvals waiting for a decision"),
    ("audit", "What ran, approved by whom: /audit [INC-…]"),
    ("kb", "Search past incident cases: /kb words"),
    ("playbooks", "Learned playbooks and their record"),
    ("status", "Bot health"),
    ("whoami", "Your Telegram id and roles"),
    ("help", "What opsgate does here"),
]
VIEWER_COMMANDS = ("incidents", "timeline", "audit", "kb", "playbooks", "status")
APPROVER_COMMANDS = ("pending",)
OPEN_COMMANDS = ("whoami", "help")


def age(since: datetime, now: datetime | None = None) -> str:
    return duration(((now or datetime.now(UTC)) - since).total_seconds())


def duration(total_seconds: float) -> str:
    seconds = int(total_seconds)
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d"


def incidents_page(page: IncidentPage, now: datetime | None = None) -> str:
    if page.total == 0:
        return "🟢 <b>No open incidents.</b>"
    first, last = page.offset + 1, page.offset + len(page.rows)
    lines = [f"🔥 <b>Open incidents</b> {first}-{last} of {page.total}"]
    for row in page.rows:
        where = " · ".join(e(p) for p in (row.service, row.namespace) if p)
        lines.append(
            f"<code>{e(row.id)}</code> {e(row.severity or '?')} <b>{e(row.alertname or '?')}</b>"
            f"{f' · {where}' if where else ''} · {age(row.created_at, now)} · {e(row.approval)}"
        )
    return "\n".join(lines)


def pending_messages(rows: list[PendingRow], now: datetime | None = None) -> list[str]:
    lines = [
        f"<code>{e(r.incident_id)}</code> <b>{e(r.alertname or '?')}</b> · risk {e(r.risk)}\n"
        f"  <code>{e(r.action)}</code>\n"
        f"  signed {len(r.approvers)}/{r.required}: {', '.join(e(a) for a in r.approvers) or '—'}"
        f" · closes {clock(r.expires_at)} ({_left(r.expires_at, now)} left)"
        for r in rows
    ]
    return pack("⏳ <b>Pending approvals</b>", lines, empty="Nothing is waiting for a decision.")


def audit_messages(rows: list[AuditRow], incident_id: str | None) -> list[str]:
    header = (
        f"🧾 <b>Audit</b> <code>{e(incident_id)}</code>"
        if incident_id
        else "🧾 <b>Audit</b> — latest executions"
    )
    icon = {"succeeded": "✅", "failed": "❌"}
    lines = [
        f"{icon.get(r.status, '⚙️')} <code>{e(r.incident_id)}</code> <code>{e(r.action)}</code>\n"
        f"  {e(r.status)} · approved by {', '.join(e(a) for a in r.approvers) or '—'}"
        f" · {r.attempts} attempt(s){took(r.duration_seconds)}"
        + (f" · {clock(r.finished_at)}" if r.finished_at else "")
        + (f"\n  {e(r.detail[:300])}" if r.detail else "")
        + (f"\n  verification {e(r.verification[:300])}" if r.verification else "")
        for r in rows
    ]
    return pack(header, lines, empty="Nothing has run.")


def knowledge_html(words: str, hits: list[SearchHit]) -> str:
    header = f"📚 <b>Knowledge</b> for <i>{e(words[:100])}</i>"
    if not hits:
        return f"{header}\nNothing found."
    lines = [header]
    for hit in hits:
        lines.append(
            f"<b>{e(hit.title[:200])}</b>\n  <code>{e(hit.incident_id)}</code> · {e(hit.status)}"
            f"\n  {e(hit.snippet[:300])}"
        )
    return "\n".join(lines)


def playbooks_messages(lines: list[PlaybookLine]) -> list[str]:
    icon = {"draft": "📝", "approved": "✅"}
    rendered = [
        f"{icon.get(p.status, '•')} <b>#{p.id}</b> {e(p.status)} · <b>{e(p.alertname)}</b> "
        f"({e(p.match_key)})\n  <code>{e(p.action)}</code> · {e(p.record)}"
        for p in lines
    ]
    header = "📒 <b>Playbooks</b> (admins: /playbook approve N, /playbook retire N)"
    return pack(header, rendered, empty="None learned yet.")


def status_html(report: HealthReport) -> str:
    last = (
        f"{clock(report.last_alert_at, seconds=True)} ({age(report.last_alert_at)} ago)"
        if report.last_alert_at
        else "none since start"
    )
    lines = [
        f"🩺 <b>opsgate</b> {e(report.version)}",
        f"uptime: {duration(report.uptime_seconds)}",
        f"database: {e(report.database)}",
        f"Kubernetes API: {e(report.kubernetes)}",
        f"job queue: {report.queue_depth if report.queue_depth is not None else 'unknown'}",
        f"last alert received: {last}",
    ]
    if report.inactive_chats:
        lines.append("inactive chats:")
        lines.extend(
            f"  <code>{c.chat_id}</code>: {e(c.reason[:200])}" for c in report.inactive_chats
        )
    else:
        lines.append("inactive chats: none")
    return "\n".join(lines)


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


def whoami_html(
    user_id: int,
    username: str | None,
    roles: list[str],
    *,
    chat_id: int | None = None,
    topic: int | None = None,
) -> str:
    """``chat_id``: asked in a group, whose id is what OPSGATE_ALERT_CHAT_ID wants."""
    name = f"@{e(username)}" if username else "(no username)"
    role_text = ", ".join(e(r) for r in roles) if roles else "none — not in the policy"
    # JSON quoting is valid YAML, so any name pastes as is.
    entry = f"- {{id: {user_id}, name: {json.dumps(username or 'you')}, roles: []}}"
    lines = [
        f"👤 {name}",
        f"Telegram id: <code>{user_id}</code>",
        f"roles: {role_text}",
        f"Policy entry (under <code>users:</code>; pick the roles): <code>{e(entry)}</code>",
    ]
    if chat_id is not None:
        lines.append(f"This chat's id: <code>{chat_id}</code>")
        lines.append(f"Alert cards here: <code>OPSGATE_ALERT_CHAT_ID={chat_id}</code>")
    if chat_id is not None and topic is not None:
        lines.append(
            f"This topic's id: <code>{topic}</code> "
            f"(<code>OPSGATE_ALERT_THREAD_ID={topic}</code>)"
        )
    return "\n".join(lines)


def _left(until: datetime, now: datetime | None) -> str:
    return duration((until - (now or datetime.now(UTC))).total_seconds())
