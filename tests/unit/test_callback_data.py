"""The callback codec: fixed cases, then properties. What opsgate writes on a button reads back
as the same action within Telegram's 64 bytes; whatever a client sends is read without an
exception, either as nothing or as an action that opsgate itself would write the same way."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


Action = CardAction | PageAction | FeedbackAction

approval_ids = st.text("0123456789abcdefghjkmnpqrstvwxyz", min_size=1, max_size=32)
incident_ids = st.from_regex(r"INC-[0-9A-Z]{4,12}", fullmatch=True)
offsets = st.integers(0, 999_999_999)
actions: st.SearchStrategy[Action] = st.one_of(
    st.builds(CardAction, st.booleans(), approval_ids),
    st.builds(FeedbackAction, approval_ids),
    st.builds(PageAction, st.just(PagedView.INCIDENTS), offsets),
    st.builds(PageAction, st.just(PagedView.TIMELINE), offsets, incident_ids),
)
SAMPLES = ["v1:ap:abc123", "v1:rj:abc123", "v1:wd:abc123", "v1:pg:inc:16", "v1:pg:tl:INC-AB12:30"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = list(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and at < len(text):
            text[at] = draw(st.characters())
        else:
            text.insert(at, draw(st.characters()))
    return "".join(text)


def read_as_written(data: str) -> None:
    """Decoding never raises; what it accepts is an id opsgate could have written, and it
    writes back the same way and in bounds."""
    action = decode(data)
    match action:
        case CardAction(approval_id=approval_id) | FeedbackAction(approval_id=approval_id):
            assert re.fullmatch(r"[0-9A-Za-z]{1,32}", approval_id)
        case PageAction(subject=subject):
            assert subject == "" or re.fullmatch(r"INC-[0-9A-Z]{4,12}", subject)
    if action is not None:
        again = encode(action)
        assert decode(again) == action
        assert len(again.encode()) <= MAX_BYTES


@settings(max_examples=300, deadline=None)
@given(actions)
def test_every_action_round_trips_within_64_bytes(action: Action) -> None:
    data = encode(action)
    assert len(data.encode()) <= MAX_BYTES
    assert decode(data) == action


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=70))
@example("v1:ap:" + "é" * 29)  # letters of any script are not an approval id
@example("v1:pg:tl:INC-ABCD\n:0")
def test_any_text_is_nothing_or_an_action_as_written(data: str) -> None:
    read_as_written(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64).map(lambda raw: raw.decode("utf-8", errors="surrogateescape")))
def test_any_bytes_are_nothing_or_an_action_as_written(data: str) -> None:
    read_as_written(data)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_data_is_nothing_or_an_action_as_written(data: str) -> None:
    read_as_written(data)
