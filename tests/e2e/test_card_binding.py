"""A tap decides only from the incident's own card: forged data elsewhere changes nothing, a
duplicate card becomes a pointer, a card whose post was never confirmed is adopted."""

from __future__ import annotations

import asyncio

from sqlalchemy import select, update

from opsgate.sandbox.telegram_api import FakeMessage
from opsgate.services.approvals import APPROVE_RECEIVED, DUPLICATE, NOT_HERE
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident, TimelineEvent
from tests.builders import ALICE, alert, am_payload, decision_buttons
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data, real_writes

OTHER_CHAT = -1005550001
GROUP = '{}:{alertname="CheckoutErrors"}'


async def forget_card(rig: Rig, incident_id: str) -> None:
    """As if opsgate died between Telegram taking the card and the card being stored: the
    card is not stored, and a new process knows nothing of it."""
    await rig.stop()
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            await session.execute(
                update(Incident).where(Incident.id == incident_id).values(message_id=None)
            )
    finally:
        await db.dispose()
    await rig.start()


async def stored_card(rig: Rig, incident_id: str) -> tuple[int | None, list[str]]:
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            message_id = await session.scalar(
                select(Incident.message_id).where(Incident.id == incident_id)
            )
            kinds = await session.scalars(
                select(TimelineEvent.kind).where(TimelineEvent.incident_id == incident_id)
            )
            return message_id, list(kinds)
    finally:
        await db.dispose()


async def wait_stored(rig: Rig, incident_id: str, message_id: int, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if (await stored_card(rig, incident_id))[0] == message_id:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"message {message_id} was never stored as the card of {incident_id}")


def unchanged(message: FakeMessage, text: str, buttons: list[tuple[str, str | None]]) -> bool:
    return (message.plain_text, message.buttons, message.edit_count) == (text, buttons, 0)


async def test_approve_data_forged_from_another_chat_changes_nothing(rig: Rig) -> None:
    rig.telegram.add_chat(OTHER_CHAT, title="Elsewhere")
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    alice = rig.telegram.user(ALICE, "alice")
    asked = rig.telegram.send_text(OTHER_CHAT, alice, "/help")
    there = await rig.wait_reply(asked.message_id, chat_id=OTHER_CHAT)
    there_text = there.plain_text

    query = rig.telegram.tap_forged(OTHER_CHAT, there.message_id, alice, approve_data(card))
    answer = await rig.telegram.wait_answer(query)

    assert (answer.text, answer.show_alert) == (NOT_HERE, True)
    assert (there.plain_text, there.edit_count) == (there_text, 0)
    assert "Approvals 0/1" in card.plain_text and card.buttons
    assert real_writes(rig) == []


async def test_approve_data_forged_from_another_card_changes_nothing(rig: Rig) -> None:
    await rig.post_alert(am_payload())
    card_a = await rig.wait_card()
    await rig.post_alert(am_payload('{}:{alertname="DiskFull"}', alert("d", alertname="DiskFull")))
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2)
    card_c = await rig.stored(rig.cards()[1])
    await rig.wait_text(card_c.message_id, "DiskFull")
    before_a = (card_a.plain_text, card_a.buttons)
    before_c = (card_c.plain_text, card_c.buttons)
    assert approve_data(card_c) != approve_data(card_a)
    alice = rig.telegram.user(ALICE, "alice")

    query = rig.telegram.tap_forged(CHAT_ID, card_c.message_id, alice, approve_data(card_a))
    answer = await rig.telegram.wait_answer(query)

    assert (answer.text, answer.show_alert) == (NOT_HERE, True)
    assert unchanged(card_c, *before_c)
    assert unchanged(card_a, *before_a)
    assert real_writes(rig) == []
    # The card itself still decides.
    query = rig.telegram.tap(CHAT_ID, card_a.message_id, alice, approve_data(card_a))
    assert (await rig.telegram.wait_answer(query)).text == APPROVE_RECEIVED
    await rig.wait_reply(card_a.message_id)


async def test_a_tapped_duplicate_card_becomes_a_pointer_to_the_card(rig: Rig) -> None:
    response = await rig.post_alert(am_payload(GROUP, alert("a")))
    incident_id = response.json()["incident_id"]
    first = await rig.wait_card()
    await forget_card(rig, incident_id)
    # The next change of the incident posts its card again, as after that crash.
    await rig.post_alert(am_payload(GROUP, alert("a"), alert("b")))
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2)
    live = rig.cards()[1]
    await rig.wait_text(live.message_id, "2/2 firing")
    await wait_stored(rig, incident_id, live.message_id)
    live_before = (live.plain_text, live.buttons)
    alice = rig.telegram.user(ALICE, "alice")

    query = rig.telegram.tap(CHAT_ID, first.message_id, alice, approve_data(first))
    answer = await rig.telegram.wait_answer(query)

    assert (answer.text, answer.show_alert) == (DUPLICATE, True)
    pointer = await rig.wait_text(first.message_id, "Duplicate card")
    assert pointer.buttons == []
    link = f"https://t.me/c/{str(CHAT_ID).removeprefix('-100')}/{live.message_id}"
    assert pointer.plain_text == (
        f"↪️ Duplicate card for {incident_id}; the live card is here: {link}"
    )
    assert [e.get("url") for e in pointer.entities if e["type"] == "text_link"] == [link]
    assert (live.plain_text, live.buttons) == live_before
    assert "Approvals 0/1" in live.plain_text
    assert real_writes(rig) == []
    assert (await stored_card(rig, incident_id))[0] == live.message_id


async def test_a_card_that_was_never_stored_is_adopted_on_tap(rig: Rig) -> None:
    response = await rig.post_alert(am_payload())
    incident_id = response.json()["incident_id"]
    card = await rig.wait_card()
    await forget_card(rig, incident_id)
    alice = rig.telegram.user(ALICE, "alice")

    query = rig.telegram.tap(CHAT_ID, card.message_id, alice, approve_data(card))
    answer = await rig.telegram.wait_answer(query)

    # A tap on a message that is not (yet) the stored card is decided before it is answered.
    assert "executing" in answer.text and not answer.show_alert
    reply = await rig.wait_reply(card.message_id)
    assert "Succeeded" in reply.plain_text
    final = await rig.wait_text(card.message_id, "Done")
    assert decision_buttons(final) == []
    assert len(rig.cards()) == 1
    assert len(real_writes(rig)) == 1
    message_id, kinds = await stored_card(rig, incident_id)
    assert message_id == card.message_id
    assert "card_adopted" in kinds
