"""The fine-tune export of an agent's proposals: its evidence, its name and what the humans
decided, from proposals made over REST and decided by taps."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from opsgate.services.finetune_export import SCHEMA_FILE
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval
from tests.builders import ALICE, BOB
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_agent_gateway import HOLMES_TOKEN, LABELS
from tests.e2e.test_agent_gateway import agent_rig as agent_rig
from tests.e2e.test_approval_loop import approve_data

EVIDENCE = {
    "text": "pods hold the config of before the reload",
    "findings": {"p99_ms": "930", "api_token": "sk-live-SECRET"},
    "links": ["https://grafana.example/d/checkout"],
    "logs": ["WARN config cache stale <reload>"],
}


async def propose(rig: Rig, alertname: str, rationale: str) -> dict[str, Any]:
    assert rig.runtime is not None
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{rig.runtime.port}",
        headers={"Authorization": f"Bearer {HOLMES_TOKEN}"},
    ) as http:
        made = await http.post(
            "/api/v1/agent/proposals",
            json={
                "action": "kubectl rollout restart deployment/checkout",
                "labels": {**LABELS, "alertname": alertname},
                "rationale": rationale,
                "evidence": EVIDENCE,
            },
        )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def signed_digest(rig: Rig, proposal: dict[str, Any]) -> str | None:
    db = Database(rig.database_url)
    try:
        async with db.read() as session:
            approval = await session.get(Approval, proposal["approval_id"])
            return approval.operation_digest if approval is not None else None
    finally:
        await db.dispose()


def reject_data(message: object) -> str:
    data = [d for _t, d in message.buttons if d and d.startswith("v1:rj:")]  # type: ignore[attr-defined]
    assert data
    return data[0]


async def test_the_export_has_the_agents_evidence_name_and_the_human_decision(
    agent_rig: Rig, tmp_path: Path
) -> None:
    rig = agent_rig
    alice, bob = rig.telegram.user(ALICE, "alice"), rig.telegram.user(BOB, "bob")
    approved = await propose(rig, "CheckoutLatency", "stale config after a reload")
    card = await rig.wait_card()
    for user in (alice, bob):
        card = rig.telegram.message(CHAT_ID, card.message_id)
        await rig.telegram.wait_answer(
            rig.telegram.tap(CHAT_ID, card.message_id, user, approve_data(card))
        )
    await rig.wait_reply(card.message_id)  # the result

    rejected = await propose(rig, "CheckoutErrors", "errors from stale config")
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2)
    (other,) = [c for c in rig.cards() if c.message_id != card.message_id]
    await rig.telegram.wait_answer(
        rig.telegram.tap(CHAT_ID, other.message_id, bob, reject_data(other))
    )
    await rig.wait_text(other.message_id, "Rejected")

    out = tmp_path / "finetune.jsonl"
    since = datetime.now(UTC).date().isoformat()
    # As an operator runs it, in a process of its own: in this one, the command's logging
    # set-up would outlive the test (loggers cached on first use).
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opsgate.cli",
        *["export", "finetune", "--since", since, "--out", str(out)],
        env={**os.environ, "OPSGATE_DATABASE_URL": rig.database_url},
    )
    assert await asyncio.wait_for(command.wait(), 120) == 0
    text = out.read_text()
    assert "sk-live-SECRET" not in text
    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    records = {}
    for line in text.splitlines():
        record = json.loads(line)
        validator.validate(record)
        records[record["approval_id"]] = record
    assert sorted(records) == sorted([approved["approval_id"], rejected["approval_id"]])

    good = records[approved["approval_id"]]
    assert good["proposal"]["agent"] == "holmes"
    assert good["proposal"]["requested_by"] == "agent:holmes"
    # The digest the approvers signed: over the operation and its plan, read after proposing.
    assert good["proposal"]["operation_digest"] == await signed_digest(rig, approved)
    assert good["proposal"]["operation_digest"] != approved["operation_digest"]
    assert good["evidence"] == {
        "rationale": "stale config after a reload",
        **EVIDENCE,
        "findings": {"p99_ms": "930", "api_token": "[redacted]"},
    }
    assert good["decision"]["outcome"] == "approved"
    assert good["decision"]["by"] == ["@alice", "@bob"]
    assert good["execution"]["status"] == "succeeded"

    bad = records[rejected["approval_id"]]
    assert bad["proposal"]["agent"] == "holmes"
    assert bad["evidence"]["rationale"] == "errors from stale config"
    assert bad["evidence"]["logs"] == EVIDENCE["logs"]
    assert bad["decision"]["outcome"] == "rejected" and bad["decision"]["by"] == ["@bob"]
    assert bad["execution"] is None
