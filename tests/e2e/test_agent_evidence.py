"""An agent's 16 KB evidence: bounded on the card, whole across the pages of /evidence and
of the card's Evidence button, each page edited in place."""

from __future__ import annotations

import json
from typing import Any

import httpx

from opsgate.bot.render import MAX_MESSAGE
from opsgate.sandbox.telegram_api import FakeMessage
from opsgate.services.agent_gateway import MAX_EVIDENCE_BYTES
from tests.builders import MALLORY, VIEWER
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_agent_gateway import HOLMES_TOKEN, LABELS
from tests.e2e.test_agent_gateway import agent_rig as agent_rig
from tests.e2e.test_commands import ask, tap_and_wait_edit

LOG_LINES = 5 * 24


def log_line(log: int, line: int) -> str:
    return f"{log}/{line:03d} WARN <conn pool=a&b> timeout after 30s; retry {line}"


def big_evidence() -> tuple[str, dict[str, Any]]:
    """As much as an agent may send, full of characters that must be escaped."""
    rationale = " ".join(f"because{i}<&>" for i in range(150))
    evidence = {
        "text": "\n".join(f"note {i:02d}: pod checkout-{i} <stale> & slow" for i in range(60)),
        "findings": {f"finding_{i:02d}<k>": f"value {i} & <{'x' * 40}>" for i in range(30)},
        "links": [f"https://grafana.example/d/{i}?a=1&b=<2>" for i in range(10)],
        "logs": ["\n".join(log_line(n, i) for i in range(24)) for n in range(5)],
    }
    size = len(json.dumps({"rationale": rationale, **evidence}))
    assert MAX_EVIDENCE_BYTES - 3000 < size <= MAX_EVIDENCE_BYTES, size
    return rationale, evidence


async def propose_big(rig: Rig) -> tuple[str, dict[str, Any], str]:
    rationale, evidence = big_evidence()
    assert rig.runtime is not None
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{rig.runtime.port}",
        headers={"Authorization": f"Bearer {HOLMES_TOKEN}"},
    ) as http:
        made = await http.post(
            "/api/v1/agent/proposals",
            json={
                "action": "kubectl rollout restart deployment/checkout",
                "labels": LABELS,
                "rationale": rationale,
                "evidence": evidence,
            },
        )
    assert made.status_code == 201, made.text
    return rationale, evidence, str(made.json()["incident_id"])


async def read_every_page(rig: Rig, first: FakeMessage) -> list[str]:
    """Next ▶ to the last page and back once; nothing new is posted on the way."""
    before = len(rig.bot_messages())
    pages = [first.plain_text]
    assert "page 1 of" in first.plain_text
    total = int(first.plain_text.split("page 1 of ", 1)[1].split()[0])
    page = first
    while "Next ▶" in dict(page.buttons):
        page = await tap_and_wait_edit(rig, page, "Next ▶")
        pages.append(page.plain_text)
        assert f"page {len(pages)} of {total}" in page.plain_text
    assert len(pages) == total and [t for t, _ in page.buttons] == ["◀ Prev"]
    back = await tap_and_wait_edit(rig, page, "◀ Prev")
    assert f"page {total - 1} of {total}" in back.plain_text
    assert len(rig.bot_messages()) == before
    assert all(len(text) <= MAX_MESSAGE for text in pages)
    return pages


def check_everything_shown(pages: list[str], rationale: str, evidence: dict[str, Any]) -> None:
    shown = "\n".join(pages)
    for word in rationale.split():
        assert word in shown, word
    for line in evidence["text"].splitlines():
        assert line in shown, line
    for key, value in evidence["findings"].items():
        assert f"• {key}: {value}" in shown, key
    for link in evidence["links"]:
        assert link in shown, link
    for n in range(5):
        for i in range(24):
            assert log_line(n, i) in shown, (n, i)


async def test_evidence_of_16_kb_is_whole_across_pages_and_bounded_on_the_card(
    agent_rig: Rig,
) -> None:
    rig = agent_rig
    rationale, evidence, incident_id = await propose_big(rig)
    card = await rig.wait_card()
    # The card: the agent's lines cut to their budgets, the whole card one message.
    assert len(card.plain_text) <= MAX_MESSAGE
    assert "proposed by agent holmes" in card.plain_text
    assert "because0<&>" in card.plain_text and "because149<&>" not in card.plain_text
    assert "finding_00<k>" in card.plain_text and "finding_29<k>" not in card.plain_text
    assert "1/000 WARN" not in card.plain_text
    assert "🧾 Evidence" in dict(card.buttons)

    first = await ask(rig, CHAT_ID, VIEWER, "vic", f"/evidence {incident_id}")
    pages = await read_every_page(rig, first)
    assert len(pages) >= 3
    check_everything_shown(pages, rationale, evidence)


async def test_the_cards_evidence_button_replies_with_the_pages(agent_rig: Rig) -> None:
    rig = agent_rig
    rationale, evidence, _ = await propose_big(rig)
    card = await rig.wait_card()
    viewer = rig.telegram.user(VIEWER, "vic")
    tapped = rig.telegram.tap(CHAT_ID, card.message_id, viewer, dict(card.buttons)["🧾 Evidence"])
    assert (await rig.telegram.wait_answer(tapped)).text in (None, "")
    reply = await rig.wait_reply(card.message_id)
    # The card itself is left as it was.
    assert rig.telegram.message(CHAT_ID, card.message_id).plain_text == card.plain_text
    check_everything_shown(await read_every_page(rig, reply), rationale, evidence)

    # Someone outside the policy gets no evidence.
    before = len(rig.bot_messages())
    outsider = rig.telegram.user(MALLORY, "m")
    refused = rig.telegram.tap(
        CHAT_ID, card.message_id, outsider, dict(card.buttons)["🧾 Evidence"]
    )
    assert "not in the opsgate policy" in ((await rig.telegram.wait_answer(refused)).text or "")
    assert len(rig.bot_messages()) == before


async def test_small_evidence_is_one_page_without_buttons(agent_rig: Rig) -> None:
    rig = agent_rig
    assert rig.runtime is not None
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{rig.runtime.port}",
        headers={"Authorization": f"Bearer {HOLMES_TOKEN}"},
    ) as http:
        made = await http.post(
            "/api/v1/agent/proposals",
            json={
                "action": "kubectl rollout restart deployment/checkout",
                "labels": LABELS,
                "rationale": "stale <config>",
                "evidence": {"logs": ["one <line>"]},
            },
        )
    incident_id = made.json()["incident_id"]
    await rig.wait_card()
    shown = await ask(rig, CHAT_ID, VIEWER, "vic", f"/evidence {incident_id}")
    assert "stale <config>" in shown.plain_text and "one <line>" in shown.plain_text
    assert "page" not in shown.plain_text and shown.buttons == []
