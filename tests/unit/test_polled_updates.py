"""Polled votes are held until their handler releases them; nothing else is."""

from __future__ import annotations

import asyncio

import structlog
from telegram import CallbackQuery, Message, Update, User

from opsgate.bot.callback_data import CardAction, PageAction, PagedView, encode
from opsgate.bot.polled_updates import UpdateReceipts

USER = User(id=1001, first_name="Alice", is_bot=False, username="alice")


def tap(update_id: int, data: str) -> Update:
    query = CallbackQuery(id=f"q{update_id}", from_user=USER, chat_instance="c", data=data)
    return Update(update_id=update_id, callback_query=query)


def command(update_id: int) -> Update:
    message = Message.de_json(
        {"message_id": 1, "date": 0, "chat": {"id": -1, "type": "group"}, "text": "/incidents"},
        None,
    )
    return Update(update_id=update_id, message=message)


async def test_only_approve_and_reject_taps_are_held() -> None:
    receipts = UpdateReceipts()
    receipts.hold(
        [
            tap(1, encode(CardAction(True, "ap1"))),
            tap(2, encode(CardAction(False, "ap1"))),
            tap(3, encode(PageAction(PagedView.INCIDENTS, 2))),
            tap(4, "garbage"),
            command(5),
        ]
    )
    assert (receipts.held, receipts.count) == ({1, 2}, 2)


async def test_fetching_waits_until_every_held_vote_is_released() -> None:
    receipts = UpdateReceipts()
    await asyncio.wait_for(receipts.settled(), 1)  # nothing held: at once
    receipts.hold([tap(1, encode(CardAction(True, "ap1"))), tap(2, encode(CardAction(True, "a")))])
    waiting = asyncio.create_task(receipts.settled())
    receipts.release(1)
    await asyncio.sleep(0.01)
    assert not waiting.done()
    receipts.release(2)
    await asyncio.wait_for(waiting, 1)


async def test_a_vote_never_released_holds_fetching_only_for_the_patience() -> None:
    receipts = UpdateReceipts(patience=0.05)
    receipts.hold([tap(7, encode(CardAction(True, "ap1")))])
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(receipts.settled(), 1)
    assert next(e for e in logs if e["event"] == "update_receipt_overdue")["update_ids"] == [7]
    assert receipts.held == frozenset()
    await asyncio.wait_for(receipts.settled(), 1)


async def test_stopped_polling_forgets_what_it_held() -> None:
    receipts = UpdateReceipts()
    receipts.hold([tap(1, encode(CardAction(True, "ap1")))])
    receipts.forget()
    assert receipts.held == frozenset()
    await asyncio.wait_for(receipts.settled(), 1)
