"""An alert storm in one chat, through the Bot API stand-in with its flood limits on: the
chat's card quota goes to cards, every other incident is a line on the digest, and /card
posts a waiting incident's card, which is the one taps decide on."""

from __future__ import annotations

from opsgate.sandbox.telegram_api import FakeMessage
from opsgate.services.approvals import APPROVE_RECEIVED
from tests.builders import ALICE, alert, am_payload
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data
from tests.job_helpers import run_waiting_card_jobs

STORM = 40
CARDS_PER_MINUTE = 4
# Telegram's shape: the stand-in refuses what opsgate's budget would not send.
GROUP_PER_MINUTE = 30


def severity(i: int) -> str:
    # The most severe ones arrive last, when the quota is spent.
    return "critical" if i >= STORM - 3 else "info"


def digests(rig: Rig) -> list[FakeMessage]:
    return [m for m in rig.bot_messages() if m.plain_text.startswith("🌩 Alert storm")]


def cards_of(rig: Rig, incident_id: str) -> list[FakeMessage]:
    return [m for m in rig.cards() if f"Incident {incident_id}" in m.plain_text]


async def storm(rig: Rig) -> list[str]:
    ids = []
    for i in range(STORM):
        name = f"Storm{i:02d}"
        payload = am_payload(
            f'{{}}:{{alertname="{name}"}}',
            alert(f"fp{i}", alertname=name, extra_labels={"severity": severity(i)}),
        )
        response = await rig.post_alert(payload)
        assert response.status_code == 200
        ids.append(response.json()["incident_id"])
    return ids


async def start(rig: Rig) -> Rig:
    rig.overrides.update(
        telegram_group_rate_per_minute=GROUP_PER_MINUTE, cards_per_minute=CARDS_PER_MINUTE
    )
    rig.telegram.set_chat_rate_limit(GROUP_PER_MINUTE, 60)
    await rig.start()
    return rig


async def test_a_storm_shows_every_incident_as_a_card_or_a_digest_line(rig_factory: Rig) -> None:
    rig = await start(rig_factory)
    ids = await storm(rig)

    def every_incident_visible() -> bool:
        shown = "\n".join(m.plain_text for m in rig.bot_messages())
        return all(incident_id in shown for incident_id in ids)

    await rig.eventually(every_incident_visible, timeout=30)
    assert len(rig.cards()) == CARDS_PER_MINUTE
    # One message holds LINES_PER_DIGEST lines; the rest start the next one.
    found = digests(rig)
    assert len(found) == 2
    lines = [
        line for digest in found for line in digest.plain_text.splitlines() if line.startswith("• ")
    ]
    assert len(lines) == STORM - CARDS_PER_MINUTE
    # On each message, most severe first, as their cards will go out.
    for digest in found:
        kinds = ["critical" in line for line in digest.plain_text.splitlines() if "• " in line]
        assert kinds == sorted(kinds, reverse=True)
    # Which incidents win the quota depends on when their plans are read; wherever the
    # critical ones went, each of them is shown exactly once.
    critical_cards = sum("· critical ·" in card.plain_text for card in rig.cards())
    assert sum("critical" in line for line in lines) + critical_cards == 3
    assert all("card waiting" in line for line in lines)
    refused = [c for c in rig.telegram.calls if c.status == 429]
    assert len(refused) <= 1, refused

    # One that resolves while it waits: its line says so, and it never gets a card.
    quiet = ids[10]
    resolved = alert(
        "fp10", alertname="Storm10", status="resolved", extra_labels={"severity": "info"}
    )
    await rig.post_alert(am_payload('{}:{alertname="Storm10"}', resolved))
    await rig.eventually(
        lambda: any(f"{quiet} info Storm10 · 🟢 resolved" in m.plain_text for m in digests(rig))
    )
    assert await run_waiting_card_jobs(rig.database_url, quiet) is None
    assert cards_of(rig, quiet) == []


async def test_card_command_posts_the_card_taps_decide_on_and_no_second_one(
    rig_factory: Rig,
) -> None:
    rig = await start(rig_factory)
    ids = await storm(rig)
    waiting = ids[-1]
    await rig.eventually(lambda: any(waiting in m.plain_text for m in digests(rig)), timeout=30)
    assert cards_of(rig, waiting) == []

    alice = rig.telegram.user(ALICE, "alice")
    rig.telegram.send_text(CHAT_ID, alice, f"/card {waiting}")
    await rig.eventually(lambda: bool(cards_of(rig, waiting)))
    [card] = cards_of(rig, waiting)
    await rig.stored(card)
    query = rig.telegram.tap(CHAT_ID, card.message_id, alice, approve_data(card))
    answer = await rig.telegram.wait_answer(query)
    assert answer.text == APPROVE_RECEIVED and not answer.show_alert
    reply = await rig.wait_reply(card.message_id, timeout=20)
    assert "Succeeded" in reply.plain_text

    # The card job that waited for the quota comes due now: it edits, it does not post.
    assert await run_waiting_card_jobs(rig.database_url, waiting) == card.message_id
    assert [m.message_id for m in cards_of(rig, waiting)] == [card.message_id]


async def test_card_command_answers_for_unknown_ids_and_points_to_an_existing_card(
    rig: Rig,
) -> None:
    response = await rig.post_alert(am_payload())
    incident_id = response.json()["incident_id"]
    card = await rig.wait_card()

    answers = {}
    for text in ("/card", "/card INC-NOPE0000", f"/card {incident_id.lower()}"):
        asked = rig.telegram.send_text(CHAT_ID, rig.telegram.user(ALICE, "alice"), text)
        if text.endswith(incident_id.lower()):
            answers[text] = await rig.wait_reply(card.message_id)
        else:
            answers[text] = await rig.wait_reply(asked.message_id)
    assert answers["/card"].plain_text.startswith("Usage: /card INC-")
    assert answers["/card INC-NOPE0000"].plain_text == "No incident INC-NOPE0000 is known."
    assert (
        answers[f"/card {incident_id.lower()}"].plain_text == f"This is the card of {incident_id}."
    )
    assert len(rig.cards()) == 1
