"""Knowledge markdown as Telegram HTML: the tags Telegram knows, escaped text, bounded length."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.bot.markdown_html import markdown_html
from opsgate.bot.render import units
from opsgate.sandbox.telegram_api import parse_html

ENTRY = """# Restart fixed CheckoutErrors

- **Incident**: INC-1 (resolved)
- **Action**: `kubectl rollout restart deployment/checkout -n shop` (risk medium)
* see [the runbook](https://runbooks.local/checkout?a=1&b=2) and _notes_


## Attempts
```
attempt 1 <ok>
```
"""


def test_the_entry_subset_becomes_telegram_html() -> None:
    html = markdown_html(ENTRY, 4096)
    assert html.splitlines()[:3] == [
        "<b>Restart fixed CheckoutErrors</b>",
        "",
        "• <b>Incident</b>: INC-1 (resolved)",
    ]
    assert "<code>kubectl rollout restart deployment/checkout -n shop</code>" in html
    assert '<a href="https://runbooks.local/checkout?a=1&amp;b=2">the runbook</a>' in html
    assert "<i>notes</i>" in html and "\n\n\n" not in html
    assert "<pre>attempt 1 &lt;ok&gt;</pre>" in html
    shown = parse_html(html)
    assert "#" not in shown.text and "**" not in shown.text and "`" not in shown.text


def test_only_http_links_become_links() -> None:
    html = markdown_html(
        '[a](javascript:alert`1`) [b](JavaScript:x) [c](https://a.b/"><b>) [d](HTTP://ok/?q=1&r)',
        500,
    )
    assert html.count("<a ") == 1 and '<a href="HTTP://ok/?q=1&amp;r">d</a>' in html
    assert "<b>" not in html
    assert parse_html(html).text == "a b c d"


def test_unpaired_markers_and_tags_stay_text() -> None:
    html = markdown_html("**half `open <i>bold</i> & _x", 500)
    assert parse_html(html).text == "**half `open <i>bold</i> & _x"


def test_a_heading_keeps_its_bold_unnested() -> None:
    assert markdown_html("## the **real** fix", 100) == "<b>the real fix</b>"


def test_what_does_not_fit_is_cut() -> None:
    html = markdown_html("first line\n" + "x" * 500 + "\n```\n" + "y" * 500, 60)
    assert units(html) <= 60 and html.startswith("first line\n") and html.endswith("…")
    code = markdown_html("```\n" + "<" * 500, 60)
    assert units(code) <= 60 and code.startswith("<pre>") and code.endswith("…</pre>")


PIECES = [*"#*_`[]()-+ \n\t<>&\"'ab:/.😀é", "https://", "javascript:", "```", "**", "&amp;"]
MARKDOWNISH = st.lists(st.sampled_from(PIECES), max_size=120).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(MARKDOWNISH, st.text(max_size=300)), st.integers(min_value=0, max_value=400))
def test_any_input_parses_and_fits(source: str, limit: int) -> None:
    html = markdown_html(source, limit)
    assert units(html) <= limit
    parse_html(html)
