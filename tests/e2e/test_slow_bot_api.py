"""A Bot API that answers later than opsgate waits: nothing is sent twice without a crash."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from opsgate.services.approvals import APPROVE_RECEIVED
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import TimelineEvent
from tests.builders import ALICE, alert, am_payload
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data, real_writes


async def timeline_kinds(rig: Rig) -> list[str]:
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            return list(await session.scalars(select(TimelineEvent.kind)))
    finally:
        await db.dispose()


async def test_a_result_reply_whose_answer_is_late_is_not_sent_again(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides.update(telegram_read_timeout=1.0)
    await rig.start()
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    # Telegram shows the reply at once but answers after opsgate stopped waiting.
    rig.telegram.delay_answer("sendMessage", 3.0)
    query = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    await rig.telegram.wait_answer(query)
    reply = await rig.wait_reply(card.message_id)
    assert "Succeeded" in reply.plain_text
    for _ in range(100):
        if "result_delivery_unknown" in await timeline_kinds(rig):
            break
        await asyncio.sleep(0.05)
    assert "result_delivery_unknown" in await timeline_kinds(rig)
    await rig.wait_text(card.message_id, "Done")
    await asyncio.sleep(1.5)
    replies = [m for m in rig.bot_messages() if m.reply_to_message_id == card.message_id]
    assert len(replies) == 1
    assert len(real_writes(rig)) == 1


async def test_a_card_whose_answer_is_late_is_not_posted_again_at_once(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides.update(telegram_read_timeout=1.0)
    await rig.start()
    rig.telegram.delay_answer("sendMessage", 3.0)
    await rig.post_alert(am_payload())
    await rig.telegram.wait_for(lambda: bool(rig.cards()), 10)
    for _ in range(100):
        if "card_delivery_unknown" in await timeline_kinds(rig):
            break
        await asyncio.sleep(0.05)
    assert "card_delivery_unknown" in await timeline_kinds(rig)
    await asyncio.sleep(1.0)
    [card] = rig.cards()
    # The unconfirmed card works: a tap makes it the incident's card, and is decided before
    # it is answered.
    query = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    assert "executing" in (await rig.telegram.wait_answer(query)).text
    await rig.wait_reply(card.message_id)
    assert len(rig.cards()) == 1


async def test_a_tap_before_the_card_is_stored_keeps_it_the_card(rig: Rig) -> None:
    # The tap arrives while opsgate still waits for the card's answer: the tap adopts the
    # card, and the answer that follows must not turn the card into a pointer to itself.
    rig.telegram.delay_answer("sendMessage", 1.5)
    await rig.post_alert(am_payload())
    await rig.telegram.wait_for(lambda: bool(rig.cards()), 10)
    [card] = rig.cards()
    query = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    assert "executing" in (await rig.telegram.wait_answer(query)).text
    await rig.wait_reply(card.message_id)
    final = await rig.wait_text(card.message_id, "Done")
    # Not even for a moment: no edit ever showed it as a duplicate.
    assert not any("Duplicate" in text for text in [*final.history, final.text])
    assert "card_adopted" in await timeline_kinds(rig)


async def test_an_approved_action_runs_while_cards_wait_for_telegram(rig_factory: Rig) -> None:
    rig = rig_factory
    # One worker per lane: in a shared pool, the held card below would hold the only one.
    rig.overrides.update(job_concurrency=1)
    await rig.start()
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    held = rig.telegram.hold("sendMessage", chat_id=CHAT_ID)
    await rig.post_alert(am_payload("g-storm", alert(alertname="DiskFull")))
    await held.wait_arrived()
    query = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    assert (await rig.telegram.wait_answer(query)).text == APPROVE_RECEIVED
    await rig.eventually(lambda: len(real_writes(rig)) == 1)
    held.release()
    reply = await rig.wait_reply(card.message_id)
    assert "Succeeded" in reply.plain_text
    assert any("DiskFull" in m.plain_text for m in rig.cards())
