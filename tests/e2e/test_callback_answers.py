"""A tap's answer survives a flaky Bot API: 5xx and 429 are retried inside Telegram's window,
so the spinner on the user's phone stops with the answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from opsgate.sandbox.telegram_api import ApiCall
from opsgate.services.approvals import APPROVE_RECEIVED
from tests.builders import ALICE, am_payload
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data


def answer_calls(rig: Rig) -> list[ApiCall]:
    return [call for call in rig.telegram.calls if call.method == "answerCallbackQuery"]


async def tap_approve(rig: Rig) -> str:
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    alice = rig.telegram.user(ALICE, "alice")
    return rig.telegram.tap(CHAT_ID, card.message_id, alice, approve_data(card))


@contextmanager
def approval_reads(rig: Rig) -> Iterator[list[float]]:
    """When opsgate read an approval by its id, in this process's clock."""
    assert rig.runtime is not None
    engine = rig.runtime.og.db.engine.sync_engine
    seen: list[float] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "approvals.id =" in statement:
            seen.append(time.time())

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


async def test_the_first_tap_on_a_new_card_is_answered_without_a_read(rig: Rig) -> None:
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    alice = rig.telegram.user(ALICE, "alice")
    with approval_reads(rig) as reads:
        tapped = time.time()
        query = rig.telegram.tap(CHAT_ID, card.message_id, alice, approve_data(card))
        answer = await rig.telegram.wait_answer(query)
    assert answer.text == APPROVE_RECEIVED
    [answered] = [call.at for call in answer_calls(rig)]
    # The approval's terms were read when the card was bound; its decision reads it after.
    assert [at for at in reads if tapped <= at <= answered] == []


async def test_an_answer_refused_with_502_is_sent_again(rig: Rig) -> None:
    rig.telegram.inject_error("answerCallbackQuery", status=502)
    query = await tap_approve(rig)

    answer = await rig.telegram.wait_answer(query)

    assert answer.text == APPROVE_RECEIVED and not answer.show_alert
    assert [call.status for call in answer_calls(rig)] == [502, 200]


async def test_an_answer_told_to_wait_waits_as_long_as_told(rig: Rig) -> None:
    rig.telegram.inject_error("answerCallbackQuery", retry_after=1)
    query = await tap_approve(rig)

    answer = await rig.telegram.wait_answer(query)

    assert answer.text == APPROVE_RECEIVED
    refused, taken = answer_calls(rig)
    assert (refused.status, taken.status) == (429, 200)
    # A lower bound: sooner would ignore what Telegram asked for.
    assert taken.at - refused.at >= 1.0
