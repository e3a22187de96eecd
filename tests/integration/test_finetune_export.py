"""The fine-tune export: a round trip through the CLI, validated against its JSON Schema."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from opsgate.cli import main
from opsgate.services.finetune_export import SCHEMA_FILE
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Alert, Approval, Signature
from tests.integration.test_learning_and_knowledge import T0, _case


async def test_export_round_trip_matches_the_schema_and_keeps_no_secrets(
    database: Database, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    approved = await _case(database, 1, verified="success")
    rejected = await _case(database, 2, status="rejected", executed=None)
    await _case(database, 3, status="expired", executed=None)
    await _case(database, 4, status="pending", executed=None)
    old = await _case(database, 5)
    async with database.transaction() as session:
        for approval_id, decided in ((approved, 1), (rejected, 2), (old, -40)):
            approval = await session.get(Approval, approval_id)
            assert approval is not None
            approval.decided_at = T0 + timedelta(days=decided)
            approval.evidence = {
                "error_rate": 0.12,
                "api_token": "sk-live-SECRET",
                "nested": {"Password": "hunter2", "p95": 2.3},
            }
        session.add(
            Signature(
                approval_id=approved,
                user_id=1001,
                username="alice",
                decision="approve",
                created_at=T0,
            )
        )
        session.add(
            Signature(
                approval_id=rejected, user_id=1002, username="bob", decision="reject", created_at=T0
            )
        )
        session.add(
            Alert(
                incident_id="INC-TEST0001",
                fingerprint="f1",
                status="firing",
                labels={"alertname": "CheckoutErrors", "auth_token": "abc123"},
                annotations={"summary": "5xx", "opsgate_action": "x"},
                starts_at=T0,
            )
        )

    out = tmp_path / "export" / "finetune.jsonl"
    monkeypatch.setenv("OPSGATE_DATABASE_URL", database_url)
    # The CLI runs its own event loop, as it does from a shell.
    argv = ["export", "finetune", "--since", "2026-11-01", "--out", str(out)]
    assert await asyncio.to_thread(main, argv) == 0

    text = out.read_text()
    for secret in ("sk-live-SECRET", "hunter2", "abc123"):
        assert secret not in text
    records = [json.loads(line) for line in text.splitlines()]
    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for record in records:
        validator.validate(record)
    by_id = {r["approval_id"]: r for r in records}
    assert sorted(by_id) == sorted([approved, rejected])
    good = by_id[approved]
    assert good["decision"] == {
        "outcome": "approved",
        "by": ["@alice"],
        "at": good["decision"]["at"],
        "note": "",
    }
    assert good["execution"]["status"] == "succeeded" and good["execution"]["attempts"] == 1
    assert good["verification"] == {"status": "success", "detail": "rollout complete"}
    assert good["evidence"]["error_rate"] == 0.12
    assert good["evidence"]["api_token"] == "[redacted]"
    assert good["evidence"]["nested"] == {"Password": "[redacted]", "p95": 2.3}
    assert good["alert"]["alerts"][0]["labels"]["auth_token"] == "[redacted]"
    bad = by_id[rejected]
    assert bad["decision"]["outcome"] == "rejected" and bad["decision"]["by"] == ["@bob"]
    assert bad["execution"] is None and bad["verification"] is None


def test_export_needs_a_date(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "finetune", "--since", "yesterday", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert "not a date (YYYY-MM-DD)" in capsys.readouterr().err
