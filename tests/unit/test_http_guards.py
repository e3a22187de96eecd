"""The bearer check in front of the webhook and the API."""

from __future__ import annotations

from opsgate.handlers.http_guards import bearer_problem


def test_without_a_configured_token_the_protected_routes_are_off() -> None:
    assert bearer_problem(None, "Bearer anything") == (
        503,
        "OPSGATE_WEBHOOK_TOKEN is not set; this endpoint is off",
    )


def test_only_the_exact_token_as_a_bearer_passes() -> None:
    refused = (401, "missing or wrong bearer token")
    assert bearer_problem("s3cret", "") == refused
    assert bearer_problem("s3cret", "Basic s3cret") == refused
    assert bearer_problem("s3cret", "Bearer s3cre") == refused
    assert bearer_problem("s3cret", "Bearer s3cret ") == refused
    assert bearer_problem("s3cret", "Bearer s3cret") is None
    assert bearer_problem("s3cret", "bearer s3cret") is None
