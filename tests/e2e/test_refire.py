"""A group that fires again after it resolved: a new incident and card, linked to the last."""

from __future__ import annotations

import re

from opsgate.sandbox.telegram_api import FakeMessage
from tests.builders import CAROL, alert, am_payload
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data
from tests.e2e.test_commands import ask
from tests.e2e.test_playbooks import GROUP, fix_and_resolve, wait_playbooks

FIRING = am_payload(GROUP, alert("a"))
RESOLVED = am_payload(GROUP, alert("a", status="resolved"))


async def _resolve(rig: Rig, card: FakeMessage) -> None:
    await rig.post_alert(RESOLVED)
    await rig.wait_text(card.message_id, "RESOLVED")


async def _refire(rig: Rig, payload: dict[str, object] = FIRING) -> FakeMessage:
    """Fires the group again; returns the new card, the last in the chat."""
    before = len(rig.cards())
    response = await rig.post_alert(payload)
    assert response.json()["created"] is True
    await rig.telegram.wait_for(lambda: len(rig.cards()) == before + 1)
    return await rig.stored(rig.cards()[-1])


def _incident_id(card: FakeMessage) -> str:
    found = re.search(r"Incident (INC-\w+)", card.plain_text)
    assert found, card.plain_text
    return found.group(1)


async def test_a_refire_posts_a_new_card_that_links_the_resolved_incident(rig: Rig) -> None:
    await rig.post_alert(FIRING)
    first = await rig.wait_card()
    await _resolve(rig, first)
    first_text, first_edits = first.text, first.edit_count
    # A resolve sent again for the resolved incident changes nothing.
    again = await rig.post_alert(RESOLVED)
    assert again.json() == {"incident_id": _incident_id(first), "created": False, "changed": False}

    second = await _refire(rig)
    assert _incident_id(second) != _incident_id(first)
    assert re.search(
        rf"🔁 fired again \d+ s after {_incident_id(first)} resolved; 2nd time in 24 h",
        second.plain_text,
    ), second.plain_text
    assert "FIRING" in second.plain_text
    # The previous incident's id links to its card, far up the chat.
    chat = str(CHAT_ID).removeprefix("-100")
    assert [e.get("url") for e in second.entities if e["type"] == "text_link"][:1] == [
        f"https://t.me/c/{chat}/{first.message_id}"
    ], second.entities
    assert approve_data(second)  # the alert's action is proposed afresh

    # While it fires, re-sent and changed payloads edit the new card and only that one.
    await rig.post_alert(FIRING)
    await rig.post_alert(am_payload(GROUP, alert("a"), alert("b")))
    await rig.wait_text(second.message_id, "2/2 firing")
    assert len(rig.cards()) == 2
    # The old card stays as it was left: resolved, unedited since.
    assert (first.text, first.edit_count) == (first_text, first_edits)


async def test_the_card_counts_how_often_the_group_fired_in_a_day(rig: Rig) -> None:
    await rig.post_alert(FIRING)
    card = await rig.wait_card()
    for _ in range(2):
        await _resolve(rig, card)
        previous, card = card, await _refire(rig)
    assert f"after {_incident_id(previous)} resolved; 3rd time in 24 h" in card.plain_text


async def test_the_playbook_learned_from_the_first_fix_is_offered_on_the_refire(
    rig: Rig,
) -> None:
    action = "kubectl rollout restart deployment/checkout -n shop"
    await fix_and_resolve(rig, action)
    await wait_playbooks(rig, "#1 draft", "worked 1/1")
    await ask(rig, CHAT_ID, CAROL, "carol", "/playbook approve 1")

    # The same group fires again, this time without an opsgate_action annotation.
    card = await _refire(rig, am_payload(GROUP, alert("a", action=None)))
    assert "fired again" in card.plain_text
    assert action in card.plain_text
    assert "playbook #1, worked 1/1, trust 0.65" in card.plain_text
    assert approve_data(card)
