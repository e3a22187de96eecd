"""Silence and acknowledge from the card, against the real Alertmanager: the silence it makes is
the one Alertmanager (and amtool) shows, and expiring it from the card expires it there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from opsgate.sandbox.telegram_api import FakeMessage
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Silence, TimelineEvent
from tests.alertmanager_proc import AMTOOL, needs_alertmanager, running_alertmanager
from tests.builders import ALICE, BOB, VIEWER, am_payload
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN, Rig
from tests.e2e.test_commands import ask
from tests.e2e.test_real_alertmanager import CONFIG
from tests.procs import free_port

pytestmark = needs_alertmanager

COMMON = {
    "alertname": "CheckoutErrors",
    "namespace": "shop",
    "service": "checkout",
    "severity": "critical",
}


@pytest.fixture
async def alertmanager(rig: Rig, tmp_path: Path) -> AsyncIterator[str]:
    assert rig.runtime is not None
    config = CONFIG.format(
        url=f"http://127.0.0.1:{rig.runtime.port}/webhook/alertmanager", token=WEBHOOK_TOKEN
    )
    async with running_alertmanager(config, tmp_path) as base:
        yield base


def _alert(pod: str) -> dict[str, Any]:
    return {
        "labels": {**COMMON, "pod": pod},
        "annotations": {"summary": "checkout 5xx above 5%"},
        "startsAt": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }


async def _fire(rig: Rig, am: httpx.AsyncClient) -> FakeMessage:
    response = await am.post("/api/v2/alerts", json=[_alert("p1"), _alert("p2")])
    assert response.status_code == 200
    card = await rig.wait_card(timeout=15)
    return await rig.wait_text(card.message_id, "2/2 firing", timeout=15)


def button(message: FakeMessage, label: str) -> str:
    found = [d for text, d in message.buttons if text == label and d]
    assert found, f"no {label!r} button on the card: {message.buttons}"
    return found[0]


async def tap(rig: Rig, card: FakeMessage, user_id: int, name: str, label: str) -> Any:
    current = rig.telegram.message(CHAT_ID, card.message_id)
    query = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(user_id, name), button(current, label)
    )
    return await rig.telegram.wait_answer(query, timeout=15)


async def _silences(am: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await am.get("/api/v2/silences")
    assert response.status_code == 200
    silences: list[dict[str, Any]] = response.json()
    return silences


async def _amtool_active(base: str) -> list[dict[str, Any]]:
    """What an operator sees with ``amtool silence query``: the active silences."""
    assert AMTOOL is not None
    process = await asyncio.create_subprocess_exec(
        AMTOOL,
        f"--alertmanager.url={base}",
        "silence",
        "query",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    found: list[dict[str, Any]] = json.loads(out)
    return found


async def _events(rig: Rig, kind: str) -> list[TimelineEvent]:
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            return list(
                await session.scalars(select(TimelineEvent).where(TimelineEvent.kind == kind))
            )
    finally:
        await db.dispose()


async def _silence_rows(rig: Rig) -> list[Silence]:
    db = Database(rig.database_url)
    try:
        async with db.transaction() as session:
            return list(await session.scalars(select(Silence)))
    finally:
        await db.dispose()


async def test_a_silence_from_the_card_is_made_in_alertmanager_and_expired_from_it(
    rig: Rig, alertmanager: str
) -> None:
    async with httpx.AsyncClient(base_url=alertmanager) as am:
        card = await _fire(rig, am)
        assert {text for text, _ in card.buttons} >= {"🔕 1 h", "🔕 4 h", "👀 Ack"}
        incident_id = card.plain_text.split("Incident ")[1].split()[0]
        four_hours = button(card, "🔕 4 h")

        answer = await tap(rig, card, ALICE, "alice", "🔕 1 h")
        assert answer.text.startswith("🔕 Silenced for 1 h, until") and not answer.show_alert
        shown = await rig.wait_text(card.message_id, "🔕 silenced until", timeout=15)
        assert "by @alice" in shown.plain_text

        [silence] = await _silences(am)
        assert silence["status"]["state"] == "active"
        assert silence["createdBy"] == "@alice"
        assert incident_id in silence["comment"]
        # The group's common labels, each an equality matcher; never one alert's own (pod).
        assert {m["name"]: m["value"] for m in silence["matchers"]} == COMMON
        assert all(m["isEqual"] and not m["isRegex"] for m in silence["matchers"])
        ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
        assert timedelta(minutes=55) < ends - datetime.now(UTC) <= timedelta(hours=1)
        # amtool comes with the Alertmanager package: what an operator would run to look.
        assert [s["id"] for s in await _amtool_active(alertmanager)] == [silence["id"]]

        await rig.eventually(
            lambda: (
                "🔔 Expire silence"
                in [t for t, _ in rig.telegram.message(CHAT_ID, card.message_id).buttons]
            )
        )
        assert "🔕 1 h" not in [
            t for t, _ in rig.telegram.message(CHAT_ID, card.message_id).buttons
        ]
        # A client that missed the edit still shows "🔕 4 h": no second silence on the first.
        query = rig.telegram.tap_stale(
            CHAT_ID, card.message_id, rig.telegram.user(BOB, "bob"), four_hours
        )
        again = await rig.telegram.wait_answer(query, timeout=15)
        assert again.show_alert and "Already silenced until" in (again.text or "")
        assert "by @alice" in (again.text or "")
        assert len(await _silences(am)) == 1
        answer = await tap(rig, card, BOB, "bob", "🔔 Expire silence")
        assert answer.text == "🔔 Silence expired."
        lifted = await rig.wait_text(card.message_id, "expired early by @bob", timeout=15)
        assert "🔕 1 h" in [t for t, _ in lifted.buttons]

        gone = await am.get(f"/api/v2/silence/{silence['id']}")
        assert gone.json()["status"]["state"] == "expired"
        assert await _amtool_active(alertmanager) == []

    [made] = await _events(rig, "silenced")
    assert made.actor == "@alice" and silence["id"] in made.summary
    [expired] = await _events(rig, "silence_expired")
    assert expired.actor == "@bob"


async def test_ack_is_on_the_card_the_timeline_and_incidents(rig: Rig) -> None:
    assert (await rig.post_alert(am_payload())).status_code == 200
    card = await rig.wait_card()
    ack = button(card, "👀 Ack")

    answer = await tap(rig, card, ALICE, "alice", "👀 Ack")
    assert answer.text.startswith("👀 Acknowledged") and not answer.show_alert
    acked = await rig.wait_text(card.message_id, "👀 @alice is on it")
    assert "👀 Ack" not in [t for t, _ in acked.buttons]
    # The approval buttons stay: acknowledging is not deciding.
    assert any(d and d.startswith("v1:ap:") for _, d in acked.buttons)

    [event] = await _events(rig, "acknowledged")
    assert event.actor == "@alice"
    listing = await ask(rig, CHAT_ID, BOB, "bob", "/incidents")
    assert "👀 @alice" in listing.plain_text

    # A second ack keeps the first one; a client that missed the edit is told who is on it.
    query = rig.telegram.tap_stale(CHAT_ID, card.message_id, rig.telegram.user(BOB, "bob"), ack)
    again = await rig.telegram.wait_answer(query)
    assert again.show_alert and "@alice is on it already" in (again.text or "")
    assert len(await _events(rig, "acknowledged")) == 1


async def test_who_may_not_silence_or_ack_is_told_and_nothing_is_made(
    rig: Rig, alertmanager: str
) -> None:
    async with httpx.AsyncClient(base_url=alertmanager) as am:
        card = await _fire(rig, am)
        before = rig.telegram.message(CHAT_ID, card.message_id).plain_text

        refused = await tap(rig, card, VIEWER, "vic", "🔕 4 h")
        assert refused.show_alert and "do not allow silence" in (refused.text or "")
        refused = await tap(rig, card, VIEWER, "vic", "👀 Ack")
        assert refused.show_alert and "do not allow ack" in (refused.text or "")

        assert await _silences(am) == []
    assert await _silence_rows(rig) == []
    assert await _events(rig, "acknowledged") == []
    assert rig.telegram.message(CHAT_ID, card.message_id).plain_text == before


async def test_an_unreachable_alertmanager_is_the_answer_and_nothing_is_half_done(
    rig_factory: Rig,
) -> None:
    # Nothing listens there: the call fails at once, as for an Alertmanager that is down.
    rig_factory.overrides["alertmanager_url"] = f"http://127.0.0.1:{free_port()}"
    await rig_factory.start()
    rig = rig_factory
    assert (await rig.post_alert(am_payload())).status_code == 200
    card = await rig.wait_card()

    answer = await tap(rig, card, ALICE, "alice", "🔕 1 h")
    assert answer.show_alert
    assert "Alertmanager is unreachable" in (answer.text or "")
    assert "Nothing was silenced" in (answer.text or "")
    assert await _silence_rows(rig) == []
    assert await _events(rig, "silenced") == []
    # The card still offers the silence: the failed tap left no claim behind.
    assert "🔕 1 h" in [t for t, _ in rig.telegram.message(CHAT_ID, card.message_id).buttons]
