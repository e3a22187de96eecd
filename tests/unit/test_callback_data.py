import pytest

from opsgate.bot.callback_data import (
    MAX_BYTES,
    CardAction,
    FeedbackAction,
    PageAction,
    PagedView,
    decode,
    encode,
)
from opsgate.bot.keyboards import incidents_keyboard, timeline_keyboard


def test_timeline_pages_round_trip_within_64_bytes() -> None:
    longest = PageAction(PagedView.TIMELINE, 999_999_999, "INC-" + "Z" * 12)
    data = encode(longest)
    assert data == "v1:pg:tl:INC-ZZZZZZZZZZZZ:999999999"
    assert len(data.encode()) <= MAX_BYTES
    assert decode(data) == longest
    assert decode("v1:pg:tl:INC-ABCD1234:30") == PageAction(PagedView.TIMELINE, 30, "INC-ABCD1234")


def test_buttons_already_in_chats_keep_decoding() -> None:
    assert decode("v1:pg:inc:0") == PageAction(PagedView.INCIDENTS, 0)
    assert decode("v1:pg:inc:16") == PageAction(PagedView.INCIDENTS, 16)
    assert encode(PageAction(PagedView.INCIDENTS, 16)) == "v1:pg:inc:16"
    assert decode("v1:ap:abc123") == CardAction(True, "abc123")
    assert decode("v1:rj:abc123") == CardAction(False, "abc123")
    assert decode("v1:wd:abc123") == FeedbackAction("abc123")


@pytest.mark.parametrize(
    "data",
    [
        "v1:pg:inc:x",
        "v1:pg:inc:²",  # a digit to str.isdigit, not to int()
        "v1:pg:inc:-1",
        "v1:pg:inc:1234567890",
        "v1:pg:inc:INC-ABCD1234:0",
        "v1:pg:tl:0",
        "v1:pg:tl:INC-ABCD1234",
        "v1:pg:tl:inc-abcd1234:0",
        "v1:pg:tl:INC-AB:0",
        "v1:pg:tl:../../x:0",
        "v1:pg:tl:INC-ABCD1234:30:1",
        "v1:pg:zz:0",
        "v0:pg:tl:INC-ABCD1234:0",
    ],
)
def test_page_data_this_version_did_not_write_is_refused(data: str) -> None:
    assert decode(data) is None


def test_nothing_is_encoded_that_would_be_refused_on_the_tap() -> None:
    with pytest.raises(ValueError, match="would not decode"):
        encode(PageAction(PagedView.TIMELINE, 0, "not-an-incident"))
    with pytest.raises(ValueError, match="would not decode"):
        encode(PageAction(PagedView.INCIDENTS, 0, "INC-ABCD1234"))


def _buttons(markup: object) -> list[tuple[str, PageAction | object]]:
    rows = getattr(markup, "inline_keyboard", ())
    return [(b.text, decode(b.callback_data)) for row in rows for b in row]


def test_timeline_buttons_lead_older_and_newer_only_where_there_is_more() -> None:
    incident = "INC-ABCD1234"
    assert timeline_keyboard(incident, 0, 30, 30) is None
    assert _buttons(timeline_keyboard(incident, 0, 30, 5000)) == [
        ("⬅️ Older", PageAction(PagedView.TIMELINE, 30, incident))
    ]
    assert _buttons(timeline_keyboard(incident, 30, 30, 5000)) == [
        ("⬅️ Older", PageAction(PagedView.TIMELINE, 60, incident)),
        ("Newer ➡️", PageAction(PagedView.TIMELINE, 0, incident)),
    ]
    assert _buttons(timeline_keyboard(incident, 4980, 30, 5000)) == [
        ("Newer ➡️", PageAction(PagedView.TIMELINE, 4950, incident))
    ]
    assert _buttons(incidents_keyboard(8, 8, 10)) == [
        ("◀ Prev", PageAction(PagedView.INCIDENTS, 0))
    ]
