"""The ingest digest: equal exactly when a payload would write the same alert rows."""

from __future__ import annotations

from typing import Any

import pytest

from opsgate.services.alertmanager import AmAlert
from opsgate.services.incidents import ingest_digest
from tests.builders import alert


def _alerts(*raw: dict[str, Any]) -> list[AmAlert]:
    return [AmAlert.model_validate(a) for a in raw]


def test_equal_payloads_have_equal_digests_in_any_order() -> None:
    first = ingest_digest(_alerts(alert("fp1"), alert("fp2")))
    assert first is not None and len(first) == 64
    assert ingest_digest(_alerts(alert("fp1"), alert("fp2"))) == first
    assert ingest_digest(_alerts(alert("fp2"), alert("fp1"))) == first


@pytest.mark.parametrize(
    "change",
    [
        {"status": "resolved", "endsAt": "2026-11-28T03:20:00Z"},
        {"endsAt": "2026-11-28T03:20:00Z"},
        {"startsAt": "2026-11-28T03:05:00Z"},
        {"labels": {"alertname": "CheckoutErrors", "pod": "checkout-2"}},
        {"annotations": {"summary": "checkout 5xx above 9%"}},
        {"generatorURL": "http://prometheus.local/graph?g0.expr=y"},
        {"fingerprint": "fp3"},
    ],
)
def test_anything_an_alert_row_stores_changes_the_digest(change: dict[str, Any]) -> None:
    assert ingest_digest(_alerts(alert("fp1"), {**alert("fp2"), **change})) != ingest_digest(
        _alerts(alert("fp1"), alert("fp2"))
    )


def test_alerts_sharing_a_key_have_no_digest() -> None:
    # Upserted in turn, the later one rewrites the row the earlier one wrote: such a payload
    # is never a repeat that changes nothing.
    assert ingest_digest(_alerts(alert("fp1"), alert("fp1", status="resolved"))) is None
    unfingerprinted = {**alert("x"), "fingerprint": ""}
    assert ingest_digest(_alerts(unfingerprinted, unfingerprinted)) is None
