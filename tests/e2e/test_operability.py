"""What an operator sees of one loop: the metrics, the access log, incident ids in the log,
and cards a chat refused, listed in /status."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import structlog
from prometheus_client.parser import text_string_to_metric_families

from opsgate.services.job_kinds import JobKind
from tests.builders import ALICE, VIEWER, alert, am_payload, policy
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN, Rig
from tests.e2e.test_approval_loop import approve_data
from tests.e2e.test_commands import ask
from tests.job_helpers import run_waiting_card_jobs

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
UNKNOWN_CHAT = -100999


@contextmanager
def captured_logs() -> Iterator[list[structlog.typing.EventDict]]:
    """structlog's capture, with the context variables merged in as production does."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        yield logs


async def scrape(rig: Rig) -> Samples:
    text = (await rig.client.get("/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


async def one_loop(rig: Rig, payload: dict[str, Any] | None = None) -> str:
    """Alert, card, approval by alice, execution, result, verification; returns the incident
    id (the card is the first in the chat)."""
    response = await rig.post_alert(payload or am_payload())
    card = await rig.wait_card()
    tap = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    await rig.telegram.wait_answer(tap)
    await rig.wait_reply(card.message_id)
    await rig.wait_text(card.message_id, "verified")
    return str(response.json()["incident_id"])


async def test_one_loop_shows_in_the_metrics(rig: Rig) -> None:
    await one_loop(rig)
    samples = await scrape(rig)

    assert value(samples, "opsgate_build_info", version="0.1.0") == 1
    assert value(samples, "opsgate_alert_payloads_total") == 1
    for histogram in ("opsgate_alert_to_card_seconds", "opsgate_tap_to_answer_seconds"):
        assert value(samples, f"{histogram}_count") >= 1
        assert value(samples, f"{histogram}_bucket", le="+Inf") >= 1
    restart = {"operation": "rollout_restart"}
    assert value(samples, "opsgate_approval_to_execution_seconds_count", **restart) == 1
    assert value(samples, "opsgate_execution_seconds_count", **restart, status="succeeded") == 1
    assert value(samples, "opsgate_executions_total", status="succeeded") == 1
    assert value(samples, "opsgate_executions_total", status="failed") == 0
    assert value(samples, "opsgate_approval_decisions_total", outcome="approved") == 1
    for outcome in ("rejected", "expired", "cancelled", "auto_approved"):
        assert value(samples, "opsgate_approval_decisions_total", outcome=outcome) == 0
    assert value(samples, "opsgate_approval_decision_seconds_count", outcome="approved") == 1
    assert value(samples, "opsgate_verifications_total", outcome="success") == 1
    assert value(samples, "opsgate_verifications_total", outcome="failed") == 0
    assert value(samples, "opsgate_cards_refused_total", reason="rejected") == 0
    for kind in JobKind:
        if kind is JobKind.PERIODIC:
            continue
        assert value(samples, "opsgate_jobs_dead_total", kind=kind.value) == 0
        assert value(samples, "opsgate_job_queue_depth", kind=kind.value) >= 0
        assert value(samples, "opsgate_job_oldest_age_seconds", kind=kind.value) >= 0
    # Edits that changed nothing are no errors, and nothing else failed in this loop.
    assert [k for k in samples if k[0] == "opsgate_telegram_errors_total"] == []


async def test_the_queue_gauges_count_waiting_jobs_by_kind(rig: Rig) -> None:
    # The card cannot go out while sendMessage is held: its job stays queued, and due.
    hold = rig.telegram.hold("sendMessage", chat_id=CHAT_ID)
    await rig.post_alert(am_payload())
    await hold.wait_arrived()
    samples = await scrape(rig)
    # The held one, and maybe a second queued behind it by the plan's completion.
    assert value(samples, "opsgate_job_queue_depth", kind="sync_card") >= 1
    assert value(samples, "opsgate_job_oldest_age_seconds", kind="sync_card") > 0
    assert value(samples, "opsgate_job_queue_depth", kind="execute") == 0
    hold.release()
    await rig.wait_card()


async def test_a_refused_webhook_call_leaves_an_access_log_line(rig: Rig) -> None:
    wrong = "Bearer wrong-secret-token"
    async with httpx.AsyncClient(base_url=str(rig.client.base_url)) as anonymous:
        with captured_logs() as logs:
            response = await anonymous.post(
                "/webhook/alertmanager?token=also-secret",
                json=am_payload(),
                headers={"Authorization": wrong},
            )
            ok = await anonymous.get("/healthz")
    assert response.status_code == 401 and ok.status_code == 200
    [line] = [e for e in logs if e["event"].startswith("http_request_")]
    assert line["event"] == "http_request_refused"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/webhook/alertmanager", 401)
    assert line["client"] == "127.0.0.1" and line["duration_ms"] >= 0
    assert line["reason"] == "missing or wrong bearer token"
    everything = repr(logs)
    for secret in ("wrong-secret-token", "also-secret", WEBHOOK_TOKEN, "CheckoutErrors"):
        assert secret not in everything


async def test_an_invalid_body_leaves_an_access_log_line(rig: Rig) -> None:
    with captured_logs() as logs:
        response = await rig.post_alert({**am_payload(), "version": "3"})
    assert response.status_code == 422
    [line] = [e for e in logs if e["event"] == "http_request_refused"]
    assert (line["path"], line["status"]) == ("/webhook/alertmanager", 422)
    assert WEBHOOK_TOKEN not in repr(logs)


async def test_execution_log_events_carry_the_incident_id(rig: Rig) -> None:
    with captured_logs() as logs:
        incident_id = await one_loop(rig)
        # The reply is in the chat a moment before its job logs that it is.
        await rig.eventually(lambda: any(e["event"] == "result_posted" for e in logs))
    events = {e["event"]: e for e in logs}
    for event in (
        "execution_attempt_started",
        "execution_attempt_succeeded",
        "card_posted",
        "approval_tap",
        "result_posted",
        "verification_finished",
    ):
        assert event in events, f"no {event} in the log"
        assert events[event].get("incident_id") == incident_id, event


async def cards_refused(rig: Rig, count: int) -> None:
    """Wait until the metric has counted at least ``count`` refused card posts (a card job
    queued again meanwhile, by the plan say, may be refused once more before it waits)."""

    async def refused() -> float:
        return (await scrape(rig)).get(
            ("opsgate_cards_refused_total", frozenset({("reason", "rejected")})), 0
        )

    for _ in range(200):
        if await refused() >= count:
            return
        await asyncio.sleep(0.05)
    assert await refused() >= count


async def test_status_lists_a_card_its_chat_refused(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.policy = policy(routes=[{"match": {"namespace": "lost"}, "chat_id": UNKNOWN_CHAT}])
    await rig.start()
    response = await rig.post_alert(am_payload("g:lost", alert("fp-lost", namespace="lost")))
    incident_id = response.json()["incident_id"]

    await cards_refused(rig, 1)
    status = (await ask(rig, CHAT_ID, VIEWER, "vic", "/status")).plain_text
    assert "cards refused by their chat: 1" in status
    assert incident_id in status and str(UNKNOWN_CHAT) in status
    assert "Chat not found" in status


async def test_a_refused_card_is_posted_once_its_chat_lets_the_bot_in(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.policy = policy(routes=[{"match": {"namespace": "lost"}, "chat_id": UNKNOWN_CHAT}])
    await rig.start()
    response = await rig.post_alert(am_payload("g:lost", alert("fp-lost", namespace="lost")))
    incident_id = response.json()["incident_id"]
    await cards_refused(rig, 1)
    # An admin adds the bot to the group; the card's next try finds it.
    rig.telegram.add_chat(UNKNOWN_CHAT, title="Lost team")
    message_id = await run_waiting_card_jobs(rig.database_url, incident_id)
    assert message_id is not None
    [card] = rig.bot_messages(UNKNOWN_CHAT)
    assert card.message_id == message_id and incident_id in card.plain_text
    status = (await ask(rig, CHAT_ID, VIEWER, "vic", "/status")).plain_text
    assert "cards refused by their chat: none" in status
