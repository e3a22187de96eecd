from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from opsgate.bot.callback_data import CardAction, decode, encode
from opsgate.bot.render import MAX_MESSAGE, card_html, ordinal, result_html
from opsgate.sandbox.telegram_api import parse_html
from opsgate.services.chat import AttemptLine, CardView, RefireLine, ResultView
from tests.builders import pending_card

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def card(**overrides: object) -> CardView:
    values: dict[str, object] = {
        "incident_id": "INC-ABCD1234",
        "incident_status": "firing",
        "severity": "critical",
        "alertname": "CheckoutErrors",
        "summary": "5xx above 5%",
        "service": "checkout",
        "namespace": "shop",
        "firing_count": 2,
        "alert_count": 3,
        "labels": {"alertname": "CheckoutErrors"},
        "action": "kubectl rollout restart deployment/checkout -n shop",
        "risk": "medium",
        "blast_radius": "every pod replaced",
        "approval_id": "abc123",
        "approval_status": "pending",
        "required_approvals": 2,
        "approvers": ("@alice",),
        "expires_at": NOW + timedelta(hours=2),
    }
    values.update(overrides)
    return CardView(**values)  # type: ignore[arg-type]


class _Balanced(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag


def balanced(html: str) -> bool:
    parser = _Balanced()
    parser.feed(html)
    parser.close()
    return not parser.stack


def test_pending_card_shows_tally_and_expiry() -> None:
    html = card_html(card())
    assert "Approvals 1/2: @alice" in html
    expires = int((NOW + timedelta(hours=2)).timestamp())
    assert (
        f'buttons close <tg-time unix="{expires}" format="r">at 05:00 UTC</tg-time> (05:00 UTC)'
        in html
    )
    assert "INC-ABCD1234" in html and "risk <b>medium</b>" in html


def test_every_value_is_escaped() -> None:
    hostile = "<b>x</b> & <script>"
    html = card_html(
        card(summary=hostile, alertname=hostile, labels={"a<": hostile}, approvers=("@<x>",))
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert balanced(html)


def test_huge_label_sets_are_cut_with_a_marker() -> None:
    labels = {f"label_{i:03d}": "v" * 100 for i in range(200)}
    html = card_html(card(labels=labels, summary="s" * 5000))
    assert len(html) <= MAX_MESSAGE
    assert "more labels cut" in html
    assert balanced(html)


def test_retry_and_final_states() -> None:
    retrying = card(
        approval_status="approved",
        execution_status="retry_wait",
        attempts=(AttemptLine(1, "transient", "apply: service unavailable", 503),),
        max_attempts=3,
        retry_delay_seconds=30,
    )
    html = card_html(retrying)
    assert "attempt 1 failed: 503: service unavailable" in html
    assert "retrying in 30 s (1/2)" in html
    done = card(
        approval_status="approved",
        execution_status="succeeded",
        result_detail="deployment shop/checkout restarted",
        duration_seconds=1.25,
    )
    assert "Done</b> in 1.2 s: deployment shop/checkout restarted" in card_html(done)
    assert "Rejected" in card_html(card(approval_status="rejected", rejected_by="@bob"))
    assert "Expired" in card_html(card(approval_status="expired"))


def test_result_reply() -> None:
    html = result_html(
        ResultView(
            "INC-X",
            "kubectl scale deployment/a --replicas=2",
            False,
            "403: <no>",
            1,
            0.5,
            ("@alice",),
        )
    )
    assert html.startswith("❌ <b>Failed</b>")
    assert "403: &lt;no&gt;" in html and "1 attempt in 0.5 s" in html


def test_callback_data_round_trip_and_rejects_foreign_data() -> None:
    data = encode(CardAction(True, "abc123defg"))
    assert data == "v1:ap:abc123defg" and len(data.encode()) <= 64
    assert decode(data) == CardAction(True, "abc123defg")
    assert decode(encode(CardAction(False, "x1"))) == CardAction(False, "x1")
    for foreign in (None, "", "v0:ap:x", "v1:zz:x", "v1:ap:../../x", "v1:ap"):
        assert decode(foreign) is None


def test_a_lapsed_signature_is_named_on_the_card_escaped() -> None:
    card = replace(
        pending_card(),
        lapsed=(
            ("@<b>al&ce", "not in the policy any more"),
            *((f"@u{i}", "not an approver") for i in range(5)),
        ),
    )
    html = card_html(card)
    assert "Signature of @&lt;b&gt;al&amp;ce no longer counts (not in the policy any more)" in html
    assert "Signature of @u1 no longer counts (not an approver)" in html
    assert "@u2" not in html and "and 3 more signature(s) that no longer count" in html


def test_a_refire_links_the_previous_incident_and_counts_the_day() -> None:
    html = card_html(card(refire=RefireLine("INC-<B>", 4 * 60 + 59, 3)))
    assert (
        "🔁 fired again 4 min after <code>INC-&lt;B&gt;</code> resolved; 3rd time in 24 h" in html
    )
    once = card_html(card(refire=RefireLine("INC-A", 90 * 60, 1)))
    assert "fired again 1 h 30 min after <code>INC-A</code> resolved\n" in once
    assert "time in 24 h" not in once
    assert "fired again" not in card_html(card())


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
        "111th",
    ]


def test_card_shows_since_when_and_only_http_links() -> None:
    card = replace(
        pending_card(),
        firing_since=datetime(2026, 12, 1, 2, 14, tzinfo=UTC),
        source_url='http://prometheus.local/graph?g0.expr=a&b="x"',
        alertmanager_url="javascript:alert(1)",
        runbook_url="https://runbooks.local/checkout",
    )
    html = card_html(card)
    since = int(datetime(2026, 12, 1, 2, 14, tzinfo=UTC).timestamp())
    assert f'🔥 firing since 02:14 UTC (<tg-time unix="{since}" format="r">' in html
    assert '<a href="http://prometheus.local/graph?g0.expr=a&amp;b=&quot;x&quot;">' not in html
    assert '<a href="https://runbooks.local/checkout">runbook</a>' in html
    assert "javascript" not in html and "Alertmanager" not in html
    plain = replace(card, source_url="http://prometheus.local/graph?g0.expr=a&b=1")
    assert '<a href="http://prometheus.local/graph?g0.expr=a&amp;b=1">source</a>' in card_html(
        plain
    )
    resolved = card_html(replace(card, incident_status="resolved"))
    assert "firing since" not in resolved


def test_pending_card_names_who_may_sign() -> None:
    few = replace(pending_card(), required_approvals=2, eligible=("alice", "@bob"))
    assert "👥 needs 2 of: @alice, @bob" in card_html(few)
    many = replace(few, eligible=("a", "b", "c", "d"), approver_roles=("admin", "sre"))
    assert "👥 needs 2 approvers with role admin or sre" in card_html(many)
    assert "👥" not in card_html(replace(few, approval_status="approved"))


def test_a_link_with_a_control_character_is_left_out() -> None:
    # Telegram's HTML parser reads a NUL as the end of the text and would refuse the card.
    card = replace(pending_card(), source_url="http://\0x", runbook_url="https://r.local/\x1b")
    html = card_html(card)
    assert "<a " not in html
    parse_html(html)
