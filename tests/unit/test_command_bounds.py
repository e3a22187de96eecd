"""Every command answer fits: one message per page, three at most per answer, whatever the text."""

import random
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from opsgate.bot.render import MAX_MESSAGE, MAX_MESSAGES, clip, pack, units
from opsgate.bot.render_commands import (
    INCIDENTS_PAGE_SIZE,
    TIMELINE_PAGE_SIZE,
    audit_messages,
    incidents_page,
    knowledge_html,
    pending_messages,
    playbooks_messages,
    status_html,
    timeline_page,
)
from opsgate.services.cards import RefusedCard, RefusedCards
from opsgate.services.chat import TimelineLine
from opsgate.services.chats import InactiveChat
from opsgate.services.health import REFUSED_CARDS_SHOWN, HealthReport
from opsgate.services.knowledge import SearchHit
from opsgate.services.playbooks import PlaybookLine
from opsgate.services.queries import AuditRow, IncidentPage, IncidentRow, PendingRow
from opsgate.services.timeline import TimelinePage

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
# What makes text longer than it looks: entities, emoji counted twice by Telegram, joiners.
PIECES = ["<", ">", "&", '"', "'", "😀", "⚠️", "👩\u200d💻", "a", " ", "\n", "é", "中", "&amp;"]
SEEDS = range(20)


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_fits(html: str) -> str:
    """One message Telegram takes: balanced HTML, under the limit as source and as text."""
    parser = _Visible()
    parser.feed(html)
    parser.close()
    assert not parser.stack
    visible = "".join(parser.text)
    assert units(html) <= MAX_MESSAGE and units(visible) <= MAX_MESSAGE
    return visible


def hostile(rng: random.Random, longest: int = 20_000) -> str:
    size = rng.choice([0, 1, 10, 100, 1000, longest])
    chunk = "".join(rng.choices(PIECES, k=min(size, 300)))
    return (chunk * (size // 300 + 1))[:size]


def timeline(events: list[TimelineLine], total: int | None = None) -> TimelinePage:
    return TimelinePage("INC-ABCD1234", events, 0, len(events) if total is None else total)


def event(summary: str, **fields: str) -> TimelineLine:
    values = {"actor": "@alice", "kind": "approval_signed", "status": "success", **fields}
    return TimelineLine(NOW, values["actor"], values["kind"], values["status"], summary)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_timeline_page_is_one_message_whatever_the_events_say(seed: int) -> None:
    rng = random.Random(seed)
    events = [
        TimelineLine(
            NOW - timedelta(seconds=i),
            hostile(rng, 500),
            hostile(rng, 100),
            rng.choice(["info", "error", hostile(rng, 10)]),
            hostile(rng),
        )
        for i in range(TIMELINE_PAGE_SIZE)
    ]
    visible = assert_fits(timeline_page(timeline(events, 5000)))
    assert "events 1-30 of 5,000, newest first" in visible


def test_short_summaries_are_shown_whole_and_only_the_long_ones_cut() -> None:
    events = [event(f"signed {i} by @alice") for i in range(TIMELINE_PAGE_SIZE - 2)]
    events += [event("x" * 10_000), event("😀" * 10_000)]
    html = timeline_page(timeline(events))
    visible = assert_fits(html)
    assert all(f"signed {i} by @alice" in visible for i in range(TIMELINE_PAGE_SIZE - 2))
    assert "x" * 500 + "…" in visible.replace("\n", "")
    assert visible.count("…") == 2
    # What the limit leaves is used, not thrown away.
    assert units(html) > MAX_MESSAGE - 10


def test_an_ordinary_page_is_not_cut_at_all() -> None:
    events = [event("kubectl rollout restart deployment/checkout -n shop")] * 30
    html = timeline_page(timeline(events))
    assert "…" not in html and html.count("deployment/checkout") == 30


def test_a_timeline_without_events() -> None:
    assert "No events recorded" in timeline_page(timeline([]))


def test_clip_cuts_between_entities_and_counts_as_telegram_does() -> None:
    assert clip("<b>", 20) == "&lt;b&gt;"
    assert clip("<b>", 5) == "&lt;…"
    assert clip("😀😀😀", 5) == "😀😀…"
    assert clip("abc", 0) == "…"


def test_pack_stops_at_three_messages_and_says_what_is_left_out() -> None:
    lines = [f"line {i} " + "x" * 1000 for i in range(50)]
    messages = pack("<b>Header</b>", lines, rest="<code>/more</code> shows them")
    assert len(messages) == MAX_MESSAGES
    for message in messages:
        assert_fits(message)
    shown = sum(m.count("line ") for m in messages)
    assert messages[-1].endswith(
        f"<i>… {50 - shown} more not shown; <code>/more</code> shows them</i>"
    )
    assert messages[1].startswith("<b>Header</b> (continued)")


def test_pack_leaves_the_rest_out_only_when_there_is_one() -> None:
    messages = pack("H", ["a", "b"], rest="never said")
    assert messages == ["H\na\nb"]


def test_pack_leaves_out_a_line_too_long_for_any_message() -> None:
    messages = pack("H", ["a", "x" * 5000, "b"])
    assert messages == ["H\na\nb\n<i>… 1 more not shown</i>"]


@pytest.mark.parametrize("seed", SEEDS)
def test_every_listing_command_is_three_messages_at_most(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.choice([1, 5, 200])
    pending = [
        PendingRow(
            f"a{i}",
            "INC-ABCD1234",
            hostile(rng),
            hostile(rng),
            hostile(rng, 50),
            [hostile(rng) for _ in range(rng.choice([0, 3]))],
            2,
            NOW + timedelta(minutes=5),
        )
        for i in range(count)
    ]
    audit = [
        AuditRow(
            "INC-ABCD1234",
            hostile(rng),
            [hostile(rng)],
            hostile(rng, 50),
            3,
            1.5,
            NOW,
            hostile(rng),
            hostile(rng),
        )
        for _ in range(count)
    ]
    playbooks = [
        PlaybookLine(i, hostile(rng), hostile(rng), hostile(rng), hostile(rng, 50), hostile(rng))
        for i in range(count)
    ]
    for messages in (
        pending_messages(pending, NOW),
        audit_messages(audit, "INC-ABCD1234"),
        audit_messages(audit, None),
        playbooks_messages(playbooks),
    ):
        assert 1 <= len(messages) <= MAX_MESSAGES
        for message in messages:
            assert_fits(message)


@pytest.mark.parametrize("seed", SEEDS)
def test_single_message_answers_fit_whatever_the_values(seed: int) -> None:
    rng = random.Random(seed)
    rows = [
        IncidentRow(
            "INC-ABCD1234",
            hostile(rng, 50),
            hostile(rng),
            hostile(rng),
            hostile(rng),
            NOW,
            hostile(rng, 50),
        )
        for _ in range(INCIDENTS_PAGE_SIZE)
    ]
    assert_fits(incidents_page(IncidentPage(rows, 0, 100), NOW))
    hits = [SearchHit(i, hostile(rng), hostile(rng), hostile(rng), hostile(rng)) for i in range(3)]
    assert_fits(knowledge_html(hostile(rng), hits))
    # The worst case (both lists full) comes up in every fourth seed.
    worst = seed % 4 == 0
    chats = [
        InactiveChat(-100 - i, "&" * 5000 if worst else hostile(rng))
        for i in range(500 if worst else rng.choice([0, 3, 500]))
    ]
    total = 900 if worst else rng.choice([0, 2, REFUSED_CARDS_SHOWN, 900])
    shown = min(total, REFUSED_CARDS_SHOWN)
    refused = RefusedCards(
        [
            RefusedCard(
                f"INC-{i:08d}", -1001234567890 - i, NOW, "<" * 5000 if worst else hostile(rng)
            )
            for i in range(shown)
        ],
        total,
    )
    report = HealthReport("0.1.0", 5.0, hostile(rng), hostile(rng), 3, NOW, chats, refused)
    visible = assert_fits(status_html(report))
    if len(chats) > 10:
        assert f"… {len(chats) - 10} more; the log names each one (chat_inactive)" in visible
    counted = f"{total:,}" if total else "none"
    assert f"cards refused by their chat: {counted}" in visible
    assert all(card.incident_id in visible for card in refused.cards)
    if total > shown:
        assert f"… {total - shown:,} more; the log names each one (card_post_rejected)" in visible
