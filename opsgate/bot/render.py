"""HTML for the chat. Every interpolated value is escaped; every message fits Telegram's limit.

Lengths are measured on the HTML itself in UTF-16 code units, as Telegram counts them, and the
HTML is never shorter than the text Telegram counts, so a message that fits here fits there.
Every field of a card has its own budget, so whatever an alert carries, the card fits.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import escape

from opsgate.services.chat import AttemptLine, CardView, MessageRef, RefireLine, ResultView

MAX_MESSAGE = 4096
# One command's answer never costs a group more than this many sends of its rate budget.
MAX_MESSAGES = 3
CUT = "…"
CARD_BUDGET = 3900
MAX_SUMMARY = 400
MAX_LABEL_VALUE = 120
# Per-field budgets (HTML units): their sum stays under CARD_BUDGET with room for labels.
MAX_NAME = 120
MAX_SHORT = 40
MAX_PLACE = 80
MAX_ACTION = 300
MAX_NOTE = 160
MAX_DETAIL = 400
MAX_ATTEMPT_ERROR = 120
# An AI agent's lines on a card.
MAX_AGENT = 40
MAX_RATIONALE = 200
MAX_FINDING_KEY = 30
MAX_FINDING_VALUE = 60
SHOWN_APPROVERS = 5
SHOWN_LAPSED = 3
SHOWN_ELIGIBLE = 3
SHOWN_FAILED_ATTEMPTS = 3

_SEVERITY_ICON = {"critical": "🔴", "error": "🔴", "high": "🔴", "warning": "🟠", "info": "🔵"}
_STATUS_ICON = {"info": "•", "success": "✅", "warning": "⚠️", "error": "❌"}


# Only http/https become links (a ``javascript:`` URL must never be one), and only short ones:
# three links of this size still leave the card its budget.
# No control characters either: Telegram's parser reads a NUL as the end of the text, so a
# payload's "http://\0" would make it refuse the whole card.
_LINKABLE = re.compile(r"https?://[^\s<>\"'`\x00-\x1f\x7f]{1,400}", re.IGNORECASE)


def e(value: object) -> str:
    return escape(str(value))


def units(text: str) -> int:
    """Telegram's length: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def clip(value: object, limit: int) -> str:
    """``value`` escaped, in at most ``limit`` units; cut text ends with the marker."""
    text = str(value)
    escaped = e(text)
    if units(escaped) <= limit:
        return escaped
    kept: list[str] = []
    used = units(CUT)
    for char in text:
        # Escaping is per character, so the kept prefix is cut between entities, never inside.
        piece = e(char)
        used += units(piece)
        if used > limit:
            break
        kept.append(piece)
    return "".join(kept) + CUT


def status_icon(status: str) -> str:
    return _STATUS_ICON.get(status, "•")


def card_html(card: CardView) -> str:
    head = _card_head(card)
    body = _card_action(card)
    labels = _labels_block(card.labels, CARD_BUDGET - units(head) - units(body))
    return "\n".join(part for part in (head, body, labels) if part)


def _card_head(card: CardView) -> str:
    if card.incident_status == "resolved":
        state = "🟢 <b>RESOLVED</b>"
    else:
        state = f"{_SEVERITY_ICON.get(card.severity.lower(), '🟠')} <b>FIRING</b>"
    severity = clip(card.severity or "unknown", MAX_SHORT)
    title = f"{state} · {severity} · <b>{clip(card.alertname or 'alert', MAX_NAME)}</b>"
    lines = [title]
    if card.summary:
        lines.append(clip(card.summary, MAX_SUMMARY))
    where = []
    if card.service:
        where.append(f"service <code>{clip(card.service, MAX_PLACE)}</code>")
    if card.namespace:
        where.append(f"namespace <code>{clip(card.namespace, MAX_PLACE)}</code>")
    where.append(f"{card.firing_count}/{card.alert_count} firing")
    lines.append(" · ".join(where))
    lines.append(f"Incident <code>{e(card.incident_id)}</code>")
    if card.refire is not None:
        lines.append(_refire_line(card.refire))
    if card.firing_since is not None and card.incident_status != "resolved":
        since = clock(card.firing_since)
        lines.append(f"🔥 firing since {since} ({relative(card.firing_since, since)})")
    lines.extend(_response_lines(card))
    links = [
        f'<a href="{e(url)}">{name}</a>'
        for name, url in (
            ("source", card.source_url),
            ("Alertmanager", card.alertmanager_url),
            ("runbook", card.runbook_url),
        )
        if _LINKABLE.fullmatch(url)
    ]
    if links:
        lines.append("🔗 " + " · ".join(links))
    return "\n".join(lines)


def _response_lines(card: CardView) -> list[str]:
    """Who is on it and the card's silence; bounded: two names, three times."""
    lines = []
    if card.acked_by:
        since = f" (since {clock(card.acked_at)})" if card.acked_at else ""
        lines.append(f"👀 {clip(card.acked_by, MAX_SHORT)} is on it{since}")
    silence = card.silence
    if silence is not None:
        by = clip(silence.created_by, MAX_SHORT)
        if silence.active:
            lines.append(f"🔕 silenced until {clock(silence.ends_at)} by {by}")
        elif silence.expired_at is not None:
            lifted = clip(silence.expired_by or "someone", MAX_SHORT)
            lines.append(
                f"🔔 silence by {by} expired early by {lifted} at {clock(silence.expired_at)}"
            )
        else:
            lines.append(f"🔔 silence by {by} ended at {clock(silence.ends_at)}")
    return lines


def _refire_line(refire: RefireLine) -> str:
    """Bounded: an incident id (``MAX_SHORT``), a duration and a count; the id links to the
    previous card where Telegram has a link for it (supergroups)."""
    previous = f"<code>{clip(refire.previous_incident_id, MAX_SHORT)}</code>"
    link = message_link(refire.previous_card) if refire.previous_card else None
    if link is not None:
        previous = f'<a href="{e(link)}">{previous}</a>'
    line = f"🔁 fired again {duration(refire.seconds_after)} after {previous} resolved"
    if refire.times_in_day > 1:
        line += f"; {ordinal(refire.times_in_day)} time in 24 h"
    return line


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _card_action(card: CardView) -> str:
    if card.action_refusal:
        return (
            f"\n⛔ <b>Action refused</b>: <code>{clip(card.action or '', MAX_ACTION)}</code>\n"
            f"{clip(card.action_refusal, MAX_ACTION)}"
        )
    if card.approval_id is None:
        return "\nNo remediation proposed."
    lines = [
        "",
        "<b>Proposed action</b>",
        f"<code>{clip(card.action or '', MAX_ACTION)}</code>",
        f"risk <b>{clip(card.risk or '', MAX_SHORT)}</b> · {clip(card.blast_radius, MAX_NOTE)}",
    ]
    lines.extend(f"⚠️ {clip(w, MAX_NOTE)}" for w in card.plan_warnings[:2])
    if card.record:
        lines.append(f"📈 {clip(card.record, MAX_NOTE)}")
    if card.related_case:
        lines.append(f"📚 past case: {clip(card.related_case, MAX_NOTE)}")
    lines.extend(agent_lines(card))
    lines.extend(_decision_lines(card))
    return "\n".join(lines)


def agent_lines(card: CardView) -> list[str]:
    """An agent's proposal: who, why, its first findings; bounded by the MAX_ budgets."""
    if not card.agent:
        return []
    lines = [f"🤖 proposed by agent <b>{clip(card.agent, MAX_AGENT)}</b> (an agent cannot approve)"]
    if card.rationale:
        lines.append(f"💬 {clip(card.rationale, MAX_RATIONALE)}")
    if card.findings:
        lines.append(
            "🔎 "
            + " · ".join(
                f"{clip(k, MAX_FINDING_KEY)}=<code>{clip(v, MAX_FINDING_VALUE)}</code>"
                for k, v in card.findings
            )
        )
    lines.append(f"Full evidence: /evidence {e(card.incident_id)}")
    return lines


def _decision_lines(card: CardView) -> list[str]:
    signed = _names(card.approvers, "none yet")
    tally = f"Approvals {len(card.approvers)}/{card.required_approvals}: {signed}"
    lapsed = _lapsed_lines(card.lapsed)
    match card.approval_status:
        case "pending":
            if card.expires_at is None:
                return [tally, *_who_may_sign(card), *lapsed]
            at = clock(card.expires_at)
            closes = f"⏳ buttons close {relative(card.expires_at, f'at {at}')} ({at})"
            blind = [] if card.approvable else ["✋ Approve comes back once the plan is read."]
            return [tally, *_who_may_sign(card), *lapsed, *blind, closes]
        case "rejected":
            rejecter = clip(card.rejected_by or "an approver", MAX_SHORT)
            return [f"🚫 <b>Rejected</b> by {rejecter}. Nothing ran."]
        case "expired":
            return [tally, "⌛ <b>Expired</b> without a decision. Nothing ran."]
        case "cancelled":
            return [tally, f"⏹ <b>Closed</b>: {clip(card.decision_note, MAX_NOTE)}. Nothing ran."]
        case _ if card.auto_approved:
            note = clip(card.decision_note.capitalize(), MAX_NOTE)
            return [f"🤖 <b>{note}</b>", *_execution_lines(card)]
        case _:
            return [f"✅ Approved by {signed}", *lapsed, *_execution_lines(card)]


def _who_may_sign(card: CardView) -> list[str]:
    """Names when they are few enough to read at a glance, else the roles."""
    n = card.required_approvals
    if 0 < len(card.eligible) <= SHOWN_ELIGIBLE:
        names = ", ".join("@" + clip(name.removeprefix("@"), MAX_SHORT) for name in card.eligible)
        return [f"👥 needs {n} of: {names}"]
    if card.approver_roles:
        shown = card.approver_roles[:SHOWN_ELIGIBLE]
        roles = " or ".join(clip(r, MAX_SHORT) for r in shown)
        more = " or others" if len(card.approver_roles) > len(shown) else ""
        noun = "approver" if n == 1 else "approvers"
        return [f"👥 needs {n} {noun} with role {roles}{more}"]
    return []


def _lapsed_lines(lapsed: tuple[tuple[str, str], ...]) -> list[str]:
    lines = [
        f"⚠️ Signature of {clip(who, MAX_SHORT)} no longer counts ({clip(why, MAX_NOTE)})"
        for who, why in lapsed[:SHOWN_LAPSED]
    ]
    more = len(lapsed) - len(lines)
    if more > 0:
        lines.append(f"⚠️ and {more} more signature(s) that no longer count")
    return lines


def _execution_lines(card: CardView) -> list[str]:
    lines = []
    retries_allowed = max(card.max_attempts - 1, 0)
    failed = [a for a in card.attempts if a.outcome in ("transient", "permanent", "interrupted")]
    if len(failed) > SHOWN_FAILED_ATTEMPTS:
        lines.append(f"({len(failed) - SHOWN_FAILED_ATTEMPTS} earlier failed attempts)")
    for attempt in failed[-SHOWN_FAILED_ATTEMPTS:]:
        error = clip(_attempt_error(attempt), MAX_ATTEMPT_ERROR)
        lines.append(f"attempt {attempt.attempt} failed: {error}")
    match card.execution_status:
        case "queued":
            lines.append("⚙️ queued for execution")
        case "running":
            n = card.attempts[-1].attempt if card.attempts else 1
            lines.append(f"⚙️ <b>executing</b> (attempt {n}/{card.max_attempts})")
        case "retry_wait":
            used = len(card.attempts)
            lines.append(
                f"🔁 retrying in {card.retry_delay_seconds:g} s ({used}/{retries_allowed})"
                + (f", at {clock(card.next_attempt_at)}" if card.next_attempt_at else "")
            )
        case "succeeded":
            detail = clip(card.result_detail, MAX_DETAIL)
            lines.append(f"✅ <b>Done</b>{took(card.duration_seconds)}: {detail}")
        case "failed":
            detail = clip(card.result_detail, MAX_DETAIL)
            lines.append(f"❌ <b>Failed</b>{took(card.duration_seconds)}: {detail}")
    lines.extend(_verification_line(card))
    return lines


_VERIFICATION = {
    "pending": "🔎 verifying",
    "success": "🔎 verified",
    "degraded": "⚠️ verification: degraded",
    "failed": "⚠️ verification failed",
    "timeout": "⌛ verification timed out",
}


def _verification_line(card: CardView) -> list[str]:
    if card.verification_status is None:
        return []
    label = _VERIFICATION.get(card.verification_status, card.verification_status)
    if card.verification_status == "pending":
        return [f"{label}…"]
    return [f"{label}: {clip(card.verification_detail, MAX_NOTE)}"]


def _names(names: tuple[str, ...], empty: str) -> str:
    shown = [clip(name, MAX_SHORT) for name in names[:SHOWN_APPROVERS]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "") or empty


def _attempt_error(attempt: AttemptLine) -> str:
    # Stored as "<stage>: <message>"; the card shows the status and the API's message.
    text = attempt.error.split(": ", 1)[-1]
    return f"{attempt.http_status}: {text}" if attempt.http_status else text


def _labels_block(labels: dict[str, str], budget: int) -> str:
    if not labels:
        return ""
    items = [
        f"{clip(k, MAX_LABEL_VALUE)}=<code>{clip(v, MAX_LABEL_VALUE)}</code>"
        for k, v in sorted(labels.items())
    ]
    block = "\nLabels: " + ", ".join(items)
    if units(block) <= budget:
        return block
    shown: list[str] = []
    for i, item in enumerate(items):
        marker = f" … ({len(items) - i} more labels cut)"
        candidate = "\nLabels: " + ", ".join([*shown, item])
        if units(candidate) + len(marker) > budget:
            return "\nLabels: " + ", ".join(shown) + marker
        shown.append(item)
    return block


def result_html(result: ResultView) -> str:
    head = "✅ <b>Succeeded</b>" if result.succeeded else "❌ <b>Failed</b>"
    attempts = f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
    approvers = _names(result.approvers, "nobody")
    parts = (result.alertname, result.service, result.namespace)
    what = " · ".join(clip(p, MAX_NAME) for p in parts if p)
    return "\n".join(
        [
            f"{head} · <code>{e(result.incident_id)}</code>" + (f" · {what}" if what else ""),
            f"<code>{clip(result.action, MAX_ACTION)}</code>",
            clip(result.detail, 1500),
            f"approved by {approvers} · {attempts}{took(result.duration_seconds)}",
        ]
    )


def duplicate_card_html(incident_id: str, live: MessageRef) -> str:
    """What a duplicate alert card becomes: no decision of its own, a way to the one that has."""
    head = f"↪️ Duplicate card for <code>{e(incident_id)}</code>"
    link = message_link(live)
    if link is None:
        return f"{head}; the live card is another message in this chat."
    return f'{head}; the live card is here: <a href="{e(link)}">{e(link)}</a>'


def message_link(ref: MessageRef) -> str | None:
    """A t.me link to a message; only supergroups (ids starting -100) have one."""
    chat = str(ref.chat_id)
    if not chat.startswith("-100"):
        return None
    return f"https://t.me/c/{chat.removeprefix('-100')}/{ref.message_id}"


def pack(
    header: str, lines: list[str], *, empty: str = "Nothing to show.", rest: str = ""
) -> list[str]:
    """Lines under a header, split at line boundaries so every message stays under the limit
    and is valid HTML on its own (no line carries an open tag into the next).

    At most MAX_MESSAGES messages: the lines that do not fit are left out, and the last message
    ends with how many, then ``rest`` (HTML: how to see them). Renderers clip their values so
    that each line fits a message with the header.
    """
    if not lines:
        return [f"{header}\n{e(empty)}"]
    messages: list[list[str]] = [[header]]
    size = units(header)
    room = MAX_MESSAGE - units(f"{header} (continued)")
    shown = 0
    for line in lines:
        cost = 1 + units(line)
        if cost > room:
            continue  # a renderer's bug must not cost the whole answer: count it as not shown
        if size + cost > MAX_MESSAGE:
            if len(messages) == MAX_MESSAGES:
                break
            messages.append([f"{header} (continued)"])
            size = units(messages[-1][0])
        messages[-1].append(line)
        size += cost
        shown += 1
    last = messages[-1]
    while shown < len(lines):
        note = f"<i>{CUT} {len(lines) - shown:,} more not shown{f'; {rest}' if rest else ''}</i>"
        if size + 1 + units(note) <= MAX_MESSAGE or len(last) == 1:
            last.append(note)
            break
        size -= 1 + units(last.pop())
        shown -= 1
    return ["\n".join(message) for message in messages]


def clock(at: datetime, *, seconds: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%H:%M UTC"
    return at.astimezone(UTC).strftime(fmt)


def relative(at: datetime, fallback: str) -> str:
    """``at`` as Telegram shows a relative time ("in 1 hour", "37 minutes ago"), kept current
    by the client itself, so the card needs no edit as minutes pass.

    ``fallback`` is what clients without date-time entities show; it must not depend on the
    time of rendering, or every re-render of an unchanged card would become an edit.
    """
    return f'<tg-time unix="{int(at.timestamp())}" format="r">{e(fallback)}</tg-time>'


def took(seconds: float | None) -> str:
    return f" in {seconds:.1f} s" if seconds is not None else ""


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
