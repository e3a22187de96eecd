"""Whatever an alert carries, its card and result parse as Telegram's HTML and fit its limit."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from opsgate.bot.render import MAX_MESSAGE, card_html, result_html
from opsgate.bot.render_digest import digest_html
from opsgate.sandbox.telegram_api import parse_html, utf16_len
from opsgate.services.chat import (
    AttemptLine,
    CardView,
    DigestEntry,
    DigestView,
    RefireLine,
    ResultView,
)
from opsgate.services.digests import LINES_PER_DIGEST

# Any displayable text, astral characters and HTML's own specials included; lone surrogates
# never reach a card (the HTTP layer refuses them).
TEXT = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from("<>&\"'😀‮​"),
        max_size=300,
    ),
    # Long runs of what grows most: escaped specials and two-unit characters.
    st.builds(
        lambda part, count: part * count,
        st.sampled_from(["&", "<", "😀", "a", '&😀"']),
        st.integers(0, 6000),
    ),
)
SHORT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
# What a payload may carry as a link: hostile schemes, specials, and URLs of any length.
URL = st.one_of(
    TEXT,
    st.builds(
        lambda scheme, rest: scheme + rest,
        st.sampled_from(["https://", "http://", "HTTPS://", "javascript:", "data:"]),
        TEXT,
    ),
)


@st.composite
def cards(draw: st.DrawFn) -> CardView:
    attempts = tuple(
        AttemptLine(n + 1, draw(st.sampled_from(["transient", "permanent"])), draw(TEXT), 503)
        for n in range(draw(st.integers(0, 21)))
    )
    return CardView(
        incident_id="INC-PROPERTY",
        incident_status=draw(st.sampled_from(["firing", "resolved"])),
        severity=draw(SHORT),
        alertname=draw(TEXT),
        summary=draw(TEXT),
        service=draw(TEXT),
        namespace=draw(TEXT),
        firing_count=draw(st.integers(0, 10_000)),
        alert_count=draw(st.integers(0, 10_000)),
        labels=draw(st.dictionaries(SHORT, TEXT, max_size=60)),
        action=draw(TEXT),
        action_refusal=draw(st.one_of(st.just(""), TEXT)),
        risk=draw(SHORT),
        blast_radius=draw(TEXT),
        plan_warnings=tuple(draw(st.lists(TEXT, max_size=5))),
        approval_id=draw(st.one_of(st.none(), st.just("ap00000001"))),
        approval_status=draw(
            st.sampled_from(["pending", "approved", "rejected", "expired", "cancelled"])
        ),
        required_approvals=draw(st.integers(0, 20)),
        approvers=tuple(draw(st.lists(SHORT, max_size=20))),
        lapsed=tuple(draw(st.lists(st.tuples(SHORT, TEXT), max_size=10))),
        rejected_by=draw(SHORT),
        decision_note=draw(TEXT),
        expires_at=datetime(2026, 12, 1, tzinfo=UTC),
        execution_status=draw(
            st.sampled_from([None, "queued", "running", "retry_wait", "succeeded", "failed"])
        ),
        attempts=attempts,
        max_attempts=len(attempts) + 1,
        result_detail=draw(TEXT),
        duration_seconds=12.5,
        verification_status=draw(st.sampled_from([None, "pending", "success", "failed"])),
        verification_detail=draw(TEXT),
        record=draw(TEXT),
        auto_approved=draw(st.booleans()),
        related_case=draw(TEXT),
        refire=draw(
            st.one_of(
                st.none(),
                st.builds(
                    RefireLine,
                    TEXT,
                    st.floats(0, 10**9, allow_nan=False),
                    st.integers(1, 10**6),
                ),
            )
        ),
        firing_since=draw(st.one_of(st.none(), st.just(datetime(2026, 12, 1, 2, 14, tzinfo=UTC)))),
        source_url=draw(URL),
        alertmanager_url=draw(URL),
        runbook_url=draw(URL),
        approver_roles=tuple(draw(st.lists(TEXT, max_size=40))),
        eligible=tuple(draw(st.lists(TEXT, max_size=5))),
    )


def fits(html: str) -> None:
    assert utf16_len(html) <= MAX_MESSAGE
    parsed = parse_html(html)  # raises as Telegram's parser refuses
    assert utf16_len(parsed.text) <= MAX_MESSAGE


@settings(max_examples=150, deadline=None)
@given(cards())
def test_every_card_is_valid_html_under_the_limit(card: CardView) -> None:
    fits(card_html(card))


@settings(max_examples=150, deadline=None)
@given(TEXT, TEXT, st.lists(SHORT, max_size=30), TEXT, TEXT, TEXT)
def test_every_result_is_valid_html_under_the_limit(
    action: str, detail: str, approvers: list[str], alertname: str, service: str, namespace: str
) -> None:
    fits(
        result_html(
            ResultView(
                incident_id="INC-PROPERTY",
                action=action,
                succeeded=True,
                detail=detail,
                attempts=3,
                duration_seconds=1.0,
                approvers=tuple(approvers),
                alertname=alertname,
                service=service,
                namespace=namespace,
            )
        )
    )


@settings(max_examples=100, deadline=None)
# The longest lines there are: names that escape or count double, the longest state.
@example([("&" * 100, "😀" * 100, "resolved")] * LINES_PER_DIGEST, 10**6)
@given(
    st.lists(
        st.tuples(TEXT, TEXT, st.sampled_from(["waiting", "card", "resolved"])),
        min_size=LINES_PER_DIGEST,
        max_size=LINES_PER_DIGEST,
    ),
    st.integers(1, 10**6),
)
def test_a_full_digest_is_valid_html_under_the_limit(
    lines: list[tuple[str, str, str]], cards_per_minute: int
) -> None:
    entries = tuple(
        DigestEntry(f"INC-{n:012d}", severity, alertname, state)
        for n, (severity, alertname, state) in enumerate(lines)
    )
    html = digest_html(DigestView(entries, cards_per_minute))
    fits(html)
    # Every incident keeps its id on its line, however long its alert's names are.
    assert all(entry.incident_id in parse_html(html).text for entry in entries)
