"""kill -9 at each step of the approval loop, restart, and check what the user then sees.

A real ``opsgate serve`` child runs against the stand-ins in this process. The stand-ins hold
one request (before acting on it, or after, with its answer held back) so the child is killed
exactly there; the restarted child, with the same instance id, must do what the README's
"What happens when opsgate dies mid-step" table promises.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage, FakeTelegram
from tests.builders import ALICE, MALLORY, am_payload, decision_buttons, policy_document
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN
from tests.procs import OpsgateProcess, OpsgateProcesses, serve_env

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
DEPLOYMENT = r"/namespaces/shop/deployments/checkout$"


@dataclass
class Loop:
    telegram: FakeTelegram
    kube: FakeKube
    procs: OpsgateProcesses
    env: dict[str, str]
    current: OpsgateProcess | None = None

    async def start(self) -> OpsgateProcess:
        self.current = await self.procs.serve(self.env)
        await self.current.wait_healthy()
        return self.current

    async def crash_and_restart(self) -> OpsgateProcess:
        assert self.current is not None
        self.current.kill_9()
        await self.current.wait()
        return await self.start()

    async def post_alert(self) -> None:
        assert self.current is not None
        async with httpx.AsyncClient(
            base_url=self.current.base_url,
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        ) as client:
            response = await client.post("/webhook/alertmanager", json=am_payload())
        assert response.status_code == 200, response.text

    def cards(self) -> list[FakeMessage]:
        return [
            m
            for m in self.telegram.messages(CHAT_ID)
            if m.from_bot and m.reply_to_message_id is None and "Incident" in m.plain_text
        ]

    def replies(self, card: FakeMessage) -> list[FakeMessage]:
        return [
            m
            for m in self.telegram.messages(CHAT_ID)
            if m.from_bot and m.reply_to_message_id == card.message_id
        ]

    async def wait_cards(self, count: int = 1) -> list[FakeMessage]:
        await self.telegram.wait_for(lambda: len(self.cards()) >= count, 30)
        return self.cards()

    async def wait_reply(self, card: FakeMessage) -> FakeMessage:
        await self.telegram.wait_for(lambda: bool(self.replies(card)), 30)
        return self.replies(card)[0]

    async def approve(self, card: FakeMessage) -> None:
        data = next(d for _text, d in card.buttons if d and d.startswith("v1:ap:"))
        query = self.telegram.tap(
            CHAT_ID, card.message_id, self.telegram.user(ALICE, "alice"), data
        )
        await self.telegram.wait_answer(query, 30)

    def real_patches(self) -> int:
        return sum(1 for r in self.kube.requests if r.method == "PATCH" and not r.dry_run)

    def restarted(self) -> bool:
        deployment = self.kube.get("deployments", "shop", "checkout")
        assert deployment is not None
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        return RESTARTED_AT in annotations

    async def final_card(self, card: FakeMessage) -> FakeMessage:
        def final() -> bool:
            return "Done" in self.telegram.message(CHAT_ID, card.message_id).plain_text or (
                "Failed" in self.telegram.message(CHAT_ID, card.message_id).plain_text
            )

        await self.telegram.wait_for(final, 30)
        return self.telegram.message(CHAT_ID, card.message_id)


@pytest.fixture
async def loop(tmp_path: Path) -> AsyncIterator[Loop]:
    telegram = FakeTelegram()
    kube = FakeKube()
    await telegram.start()
    await kube.start()
    telegram.add_chat(CHAT_ID, type="supergroup", title="On-call")
    kube.add_deployment("shop", "checkout", replicas=2, image="checkout:1")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy_document()))
    env = serve_env(
        telegram,
        kube,
        f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}",
        tmp_path,
        {
            "policy_file": policy_file,
            "instance_id": "crash-test",
            # A retry would hide what the restart did; these tests want one attempt.
            "retry_max": 0,
        },
    )
    procs = OpsgateProcesses(tmp_path)
    try:
        yield Loop(telegram, kube, procs, env)
    finally:
        await procs.close()
        await kube.stop()
        await telegram.stop()


async def test_killed_during_the_dry_run_the_attempt_runs_again(loop: Loop) -> None:
    await loop.start()
    await loop.post_alert()
    [card] = await loop.wait_cards()
    hold = loop.kube.hold("PATCH", DEPLOYMENT, dry_run=True)
    await loop.approve(card)
    await hold.wait_arrived(30)

    await loop.crash_and_restart()

    reply = await loop.wait_reply(card)
    assert "Succeeded" in reply.plain_text
    assert loop.restarted() and loop.real_patches() == 1
    assert len(loop.replies(card)) == 1


async def test_killed_during_the_real_call_the_outcome_is_unknown_and_not_repeated(
    loop: Loop,
) -> None:
    await loop.start()
    await loop.post_alert()
    [card] = await loop.wait_cards()
    hold = loop.kube.hold("PATCH", DEPLOYMENT, dry_run=False)
    await loop.approve(card)
    await hold.wait_arrived(30)

    await loop.crash_and_restart()
    await hold.wait_dropped(30)

    reply = await loop.wait_reply(card)
    assert "outcome is unknown" in reply.plain_text
    # The call never took effect, and opsgate did not send it a second time.
    assert not loop.restarted() and loop.real_patches() == 1


async def test_killed_after_the_change_applied_the_outcome_is_proven_by_reading(
    loop: Loop,
) -> None:
    await loop.start()
    await loop.post_alert()
    [card] = await loop.wait_cards()
    hold = loop.kube.hold_answer("PATCH", DEPLOYMENT, dry_run=False)
    await loop.approve(card)
    await hold.wait_arrived(30)

    await loop.crash_and_restart()

    reply = await loop.wait_reply(card)
    assert "Succeeded" in reply.plain_text
    assert "confirmed by reading the object" in reply.plain_text
    assert loop.restarted() and loop.real_patches() == 1


async def test_killed_after_telegram_took_the_result_the_change_is_not_repeated(
    loop: Loop,
) -> None:
    await loop.start()
    await loop.post_alert()
    [card] = await loop.wait_cards()
    hold = loop.telegram.hold_answer("sendMessage", chat_id=CHAT_ID)
    await loop.approve(card)
    await hold.wait_arrived(30)

    await loop.crash_and_restart()

    final = await loop.final_card(card)
    assert "Done" in final.plain_text and decision_buttons(final) == []
    # The one case the README names: Telegram showed the reply, opsgate never heard of it and
    # sends it again. Never more than that, and the change itself ran once.
    assert 1 <= len(loop.replies(card)) <= 2
    assert loop.real_patches() == 1


async def test_killed_during_a_card_edit_the_card_reaches_its_final_state(loop: Loop) -> None:
    await loop.start()
    await loop.post_alert()
    [card] = await loop.wait_cards()
    hold = loop.telegram.hold("editMessageText", chat_id=CHAT_ID)
    await loop.approve(card)
    await hold.wait_arrived(30)

    await loop.crash_and_restart()

    await loop.wait_reply(card)
    final = await loop.final_card(card)
    assert "Done" in final.plain_text and decision_buttons(final) == []
    assert len(loop.replies(card)) == 1 and loop.real_patches() == 1


async def test_killed_after_telegram_took_the_card_the_duplicate_is_harmless(
    loop: Loop,
) -> None:
    await loop.start()
    hold = loop.telegram.hold_answer("sendMessage", chat_id=CHAT_ID)
    await loop.post_alert()
    await hold.wait_arrived(30)

    await loop.crash_and_restart()

    first, second = await loop.wait_cards(2)
    await loop.approve(first)

    def pointer() -> FakeMessage | None:
        for card in (first, second):
            shown = loop.telegram.message(CHAT_ID, card.message_id)
            if "Duplicate card" in shown.plain_text:
                return shown
        return None

    # Whichever copy opsgate stored first is the card; the tap either decided on it or
    # turned the other into a pointer to it (no buttons), deciding nothing.
    await loop.telegram.wait_for(lambda: pointer() is not None, 30)
    duplicate = pointer()
    assert duplicate is not None and duplicate.buttons == []
    live = second if duplicate.message_id == first.message_id else first
    if duplicate.message_id == first.message_id:
        assert loop.real_patches() == 0
        await loop.approve(loop.telegram.message(CHAT_ID, live.message_id))
    reply = await loop.wait_reply(live)
    assert "Succeeded" in reply.plain_text
    assert loop.replies(duplicate) == [] and loop.real_patches() == 1


async def test_killed_after_the_webhook_answered_the_card_is_posted_once(loop: Loop) -> None:
    await loop.start()
    hold = loop.telegram.hold("sendMessage", chat_id=CHAT_ID)
    await loop.post_alert()
    await hold.wait_arrived(30)

    await loop.crash_and_restart()
    await hold.wait_dropped(30)

    [card] = await loop.wait_cards()
    assert "CheckoutErrors" in card.plain_text
    await loop.approve(card)
    assert "Succeeded" in (await loop.wait_reply(card)).plain_text
    assert len(loop.cards()) == 1


async def test_killed_after_a_tap_was_answered_but_before_its_vote_was_written(
    loop: Loop, tmp_path: Path
) -> None:
    """A tap is answered before its vote is written; Telegram keeps it until the vote is."""
    await loop.start()
    await loop.post_alert()
    [card] = await loop.wait_cards()
    # The plan read and drawn first, so that the card's own writes are not what the lock holds.
    await loop.telegram.wait_for(
        lambda: "pods replaced" in loop.telegram.message(CHAT_ID, card.message_id).plain_text,
        30,
    )
    # A stranger's tap first, so that the approval's terms are read and kept and Alice's tap
    # is answered from memory; its refusal is written before the lock below is taken.
    data = next(d for _text, d in card.buttons if d and d.startswith("v1:ap:"))
    stranger = loop.telegram.user(MALLORY, "mallory")
    await loop.telegram.wait_answer(loop.telegram.tap(CHAT_ID, card.message_id, stranger, data))
    database = tmp_path / "opsgate.db"
    writer = sqlite3.connect(database, isolation_level=None, timeout=30, check_same_thread=False)
    try:
        await loop.telegram.wait_for(lambda: refusals(writer) == 1, 30)
        # Another writer holds SQLite's write lock: the vote waits for it, the answer does not.
        await asyncio.to_thread(writer.execute, "BEGIN IMMEDIATE")
        await loop.approve(card)
        assert loop.current is not None
        loop.current.kill_9()
        await loop.current.wait()
    finally:
        writer.close()

    await loop.start()

    reply = await loop.wait_reply(card)
    assert "Succeeded" in reply.plain_text and "@alice" in reply.plain_text
    assert loop.restarted() and loop.real_patches() == 1


def refusals(connection: sqlite3.Connection) -> int:
    row = connection.execute(
        "SELECT count(*) FROM timeline_events WHERE kind = 'tap_refused'"
    ).fetchone()
    return int(row[0])
