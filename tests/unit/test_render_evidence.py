"""The evidence pages: each fits one message, and together they lose nothing."""

from __future__ import annotations

import html
import re

from opsgate.bot.render import CARD_BUDGET, units
from opsgate.bot.render_evidence import evidence_pages

PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL)


def test_long_lines_are_cut_between_characters_and_nothing_is_lost() -> None:
    logs = ["<&>" * 666, "a\n" * 900 + "😀" * 500, "one line"]
    text = "x" * 4000
    pages = evidence_pages("INC-ABCD1234", "holmes", {"text": text, "logs": logs})
    assert len(pages) > 3
    for number, page in enumerate(pages, start=1):
        assert units(page) <= CARD_BUDGET, number
        assert f"page {number} of {len(pages)}" in page
    chunks = [html.unescape(c) for page in pages for c in PRE.findall(page)]
    assert "".join(chunks).replace("\n", "") == "".join(logs).replace("\n", "")
    assert "".join(pages).count("x") == 4000
    assert "<b>Log 1</b> <i>(continued)</i>" in "".join(pages)


def test_no_javascript_link_and_no_unescaped_markup() -> None:
    evidence = {
        "links": ["javascript:alert(1)", "https://ok.example/?a=1&b=2", "https://x.example/<b>"],
        "findings": {"<b>k</b>": "<i>v</i>" * 80},
        "rationale": "</pre><script>",
    }
    (page,) = evidence_pages("INC-ABCD1234", "<holmes>", evidence)
    assert 'href="javascript' not in page and "<code>javascript:alert(1)</code>" in page
    assert 'href="https://ok.example/?a=1&amp;b=2"' in page
    assert "<code>https://x.example/&lt;b&gt;</code>" in page
    assert "<script>" not in page and "&lt;holmes&gt;" in page
    assert "&lt;b&gt;k&lt;/b&gt;" in page


def test_nothing_sent_is_still_one_page() -> None:
    (page,) = evidence_pages("INC-ABCD1234", "holmes", {})
    assert "proposed by agent <b>holmes</b>" in page
