"""Property tests for the callback codec: what opsgate writes on a button reads back as the same
action within Telegram's 64 bytes, and whatever a client sends is read without an exception,
either as nothing or as an action that opsgate itself would write the same way."""

from __future__ import annotations

import re

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
