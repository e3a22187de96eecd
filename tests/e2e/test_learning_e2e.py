"""After the reply: knowledge write-back found by /kb, and the "Wrong diagnosis" signal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from opsgate.services.storage.db import Database
from opsgate.services.storage.models import KnowledgeEntry, PlaybookStat
from tests.builders import ALICE, BOB, MALLORY, VIEWER, am_payload
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Wait for a fact that only the database shows."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def _stat_and_entry(rig: Rig) -> tuple[PlaybookStat | None, KnowledgeEntry | None]:
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            return (
                await session.scalar(select(PlaybookStat)),
                await session.scalar(select(KnowledgeEntry)),
            )
    finally:
        await db.dispose()


async def test_knowledge_and_feedback_after_the_reply(rig: Rig) -> None:
    incident_id = (await rig.post_alert(am_payload())).json()["incident_id"]
    card = await rig.wait_card()
    alice = rig.telegram.user(ALICE, "alice")
    await rig.telegram.wait_answer(
        rig.telegram.tap(CHAT_ID, card.message_id, alice, approve_data(card))
    )
    reply = await rig.wait_reply(card.message_id)
    await rig.wait_text(card.message_id, "verified")
    # A restart can be undone: the reply offers that too (tests/e2e/test_plans.py).
    assert [text for text, _ in reply.buttons] == ["👎 Wrong diagnosis", "↩️ Undo"]

    async def entry_verified() -> bool:
        _, entry = await _stat_and_entry(rig)
        return entry is not None and "**Verification**: success" in entry.content

    await poll(entry_verified)
    asked = rig.telegram.send_text(
        CHAT_ID, rig.telegram.user(VIEWER, "vic"), "/kb checkout restart"
    )
    answer = await rig.wait_reply(asked.message_id)
    found = answer.plain_text
    assert "Fixed CheckoutErrors with kubectl rollout restart deployment/checkout -n shop" in found
    assert incident_id in found
    # The entry's markdown is shown as formatting, not as its marks.
    assert "**" not in found and "- **" not in answer.text and "• " in found
    assert sum(ent["type"] == "bold" for ent in answer.entities) > 1

    data = reply.buttons[0][1] or ""
    stranger = rig.telegram.tap(CHAT_ID, reply.message_id, rig.telegram.user(MALLORY, "m"), data)
    assert (await rig.telegram.wait_answer(stranger)).show_alert
    # The same data sent from the card, not from the result's reply, changes nothing.
    misplaced = rig.telegram.tap_forged(CHAT_ID, card.message_id, alice, data)
    answer = await rig.telegram.wait_answer(misplaced)
    assert answer.show_alert and "does not belong here" in (answer.text or "")
    first = rig.telegram.tap(CHAT_ID, reply.message_id, alice, data)
    assert (await rig.telegram.wait_answer(first)).text.startswith("Thanks")
    second = rig.telegram.tap(CHAT_ID, reply.message_id, rig.telegram.user(BOB, "bob"), data)
    assert (await rig.telegram.wait_answer(second)).text.startswith("Already recorded")

    async def counted() -> bool:
        stat, _ = await _stat_and_entry(rig)
        return stat is not None and stat.wrong_diagnoses == 1

    await poll(counted)
    stat, _ = await _stat_and_entry(rig)
    assert stat is not None and stat.wrong_diagnoses == 1 and stat.verified_success == 1
    assert stat.trust < 0.65  # one verified success (0.65), then one wrong diagnosis


async def test_the_scheduled_export_writes_its_file(rig_factory: Rig) -> None:
    rig = rig_factory
    export_dir = rig.tmp_path / "exports"
    rig.overrides["export_dir"] = export_dir
    await rig.start()

    async def written() -> bool:
        return any(export_dir.glob("finetune-*.jsonl"))

    await poll(written)
    assert [p.read_text() for p in export_dir.glob("finetune-*.jsonl")] == [""]


async def test_a_new_card_shows_the_closest_past_case(rig: Rig) -> None:
    first = (await rig.post_alert(am_payload())).json()["incident_id"]
    card = await rig.wait_card()
    await rig.telegram.wait_answer(
        rig.telegram.tap(
            CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
        )
    )
    await rig.wait_reply(card.message_id)

    async def written() -> bool:
        _, entry = await _stat_and_entry(rig)
        return entry is not None

    await poll(written)
    await rig.post_alert(am_payload("g-second"))
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2)
    second = await rig.stored(rig.cards()[1])
    assert "📚 past case: Fixed CheckoutErrors with kubectl rollout restart" in second.plain_text
    assert f"({first})" in second.plain_text
    _, entry = await _stat_and_entry(rig)
    assert entry is not None and entry.reference_count == 1 and entry.referenced_at is not None
