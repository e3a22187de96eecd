"""HTTP contracts, escaping, Telegram back-pressure, forum topics and expiry."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from opsgate.bot.callback_data import CardAction, encode
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Incident
from tests.builders import ALICE, alert, am_payload, decision_buttons
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data
from tests.integration.test_ingest_batches import refuse_group


async def test_webhook_and_api_need_the_bearer_token(rig: Rig) -> None:
    async with httpx.AsyncClient(base_url=str(rig.client.base_url)) as anonymous:
        assert (await anonymous.post("/webhook/alertmanager", json=am_payload())).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        response = await anonymous.post("/api/v1/approvals", json={}, headers=wrong)
        assert response.status_code == 401
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        assert (await anonymous.get("/readyz")).status_code == 200
        metrics = await anonymous.get("/metrics")
        assert "opsgate_alert_payloads_total" in metrics.text


async def test_bad_input_gets_a_clear_4xx_and_stores_nothing(rig: Rig) -> None:
    bad_version = {**am_payload(), "version": "3"}
    response = await rig.post_alert(bad_version)
    assert response.status_code == 422 and "version" in response.text
    response = await rig.client.post(
        "/webhook/alertmanager", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    refused = await rig.client.post(
        "/api/v1/approvals",
        json={
            "action": "kubectl delete namespace shop",
            "requested_by": "bot",
            "labels": {"alertname": "X"},
        },
    )
    assert refused.status_code == 422 and "only pods may be deleted" in refused.json()["detail"]
    unknown = await rig.client.post(
        "/api/v1/approvals",
        json={
            "action": "kubectl delete pod/x -n shop",
            "requested_by": "bot",
            "incident_id": "INC-NOPE0000",
        },
    )
    assert unknown.status_code == 404
    nameless = await rig.client.post(
        "/api/v1/approvals", json={"action": "kubectl delete pod/x -n shop", "requested_by": "bot"}
    )
    assert nameless.status_code == 422 and "alertname" in nameless.text
    assert (await rig.client.get("/api/v1/approvals/nothing")).status_code == 404
    assert rig.cards() == []


async def test_api_proposal_on_an_alertmanager_incident(rig: Rig) -> None:
    created = (await rig.post_alert(am_payload("g-plain", alert(action=None)))).json()
    card = await rig.wait_card()
    assert decision_buttons(card) == []
    body = {
        "action": "kubectl rollout restart deployment/checkout",
        "requested_by": "ai-agent",
        "incident_id": created["incident_id"],
        "evidence": {"error_rate": 0.12},
    }
    response = await rig.client.post("/api/v1/approvals", json=body)
    assert response.status_code == 201, response.text
    status = response.json()
    assert status["action"] == "kubectl rollout restart deployment/checkout -n shop"
    # The same proposal again is the same approval; another proposer's is a conflict.
    again = await rig.client.post("/api/v1/approvals", json=body)
    assert again.json()["approval_id"] == status["approval_id"]
    other = {**body, "requested_by": "someone-else"}
    assert (await rig.client.post("/api/v1/approvals", json=other)).status_code == 409
    with_buttons = await rig.wait_text(card.message_id, "Approvals 0/1")
    assert approve_data(with_buttons)
    fetched = await rig.client.get(f"/api/v1/approvals/{status['approval_id']}")
    assert fetched.json()["status"] == "pending"


async def test_hostile_text_is_escaped_on_the_card(rig: Rig) -> None:
    payload = am_payload("g-html", alert(extra_labels={"team": "<b>ops</b> & co"}))
    payload["alerts"][0]["annotations"]["summary"] = "<script>alert(1)</script> & <i>"
    await rig.post_alert(payload)
    card = await rig.wait_card()
    assert "<script>alert(1)</script> & <i>" in card.plain_text


async def test_a_429_delays_the_card_but_does_not_lose_it(rig: Rig) -> None:
    rig.telegram.inject_error("sendMessage", status=429, retry_after=1, count=2)
    await rig.post_alert(am_payload())
    card = await rig.wait_card(timeout=15)
    assert "CheckoutErrors" in card.plain_text


async def test_the_webhook_answers_while_the_card_is_still_being_posted(rig: Rig) -> None:
    held = rig.telegram.hold("sendMessage", chat_id=CHAT_ID)
    payload = am_payload("g-held", alert())
    first = (await rig.post_alert(payload)).json()
    assert first["created"] and first["changed"]
    await held.wait_arrived()
    # Alertmanager repeats the group while the card job is stuck on Telegram.
    for _ in range(3):
        repeat = await rig.post_alert(payload)
        assert repeat.json() == {**first, "created": False, "changed": False}
    held.release()
    card = await rig.wait_card()
    assert "CheckoutErrors" in card.plain_text
    await asyncio.sleep(0.5)
    assert len(rig.cards()) == 1


async def test_forum_topic_is_kept_for_card_and_reply(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.telegram.add_topic(CHAT_ID, 77)
    rig.overrides["alert_thread_id"] = 77
    await rig.start()
    try:
        await rig.post_alert(am_payload())
        card = await rig.wait_card()
        assert card.message_thread_id == 77
        query = rig.telegram.tap(
            CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
        )
        await rig.telegram.wait_answer(query)
        reply = await rig.wait_reply(card.message_id)
        assert reply.message_thread_id == 77
    finally:
        await rig.stop()


async def test_expired_approvals_close_their_cards(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides["approval_ttl_seconds"] = 1
    await rig.start()
    try:
        await rig.post_alert(am_payload())
        card = await rig.wait_card()
        # A one-second approval may expire before its plan is read and its card first posted,
        # so the Approve button it would have offered is built from the stored approval.
        db = Database(rig.database_url)
        try:
            async with db.read() as session:
                approval_id = await session.scalar(select(Approval.id))
        finally:
            await db.dispose()
        assert approval_id is not None
        data = encode(CardAction(approve=True, approval_id=approval_id))
        expired = await rig.wait_text(card.message_id, "Expired", timeout=10)
        assert decision_buttons(expired) == []
        late = rig.telegram.tap_stale(
            CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), data
        )
        answer = await rig.telegram.wait_answer(late)
        assert answer.show_alert and "expired" in answer.text
    finally:
        await rig.stop()


async def test_timeline_usage_and_unknown_incident(rig: Rig) -> None:
    alice = rig.telegram.user(ALICE, "alice")
    usage = rig.telegram.send_text(CHAT_ID, alice, "/timeline")
    assert "Usage" in (await rig.wait_reply(usage.message_id)).plain_text
    unknown = rig.telegram.send_text(CHAT_ID, alice, "/timeline@opsgate_bot INC-ZZZZ9999")
    assert "No incident INC-ZZZZ9999" in (await rig.wait_reply(unknown.message_id)).plain_text
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    by_reply = rig.telegram.send_text(
        CHAT_ID, alice, "/timeline", reply_to_message_id=card.message_id
    )
    assert "alert_received" in (await rig.wait_reply(by_reply.message_id)).plain_text


async def test_buttons_from_an_older_version_are_answered_and_ignored(rig: Rig) -> None:
    await rig.post_alert(am_payload())
    card = await rig.wait_card()
    user = rig.telegram.user(ALICE, "alice")
    for data in ("v0:ap:abc", "v1:zz:abc", "v1:pg:inc:x"):
        answer = await rig.telegram.wait_answer(
            rig.telegram.tap_stale(CHAT_ID, card.message_id, user, data)
        )
        assert answer.show_alert and answer.text == "This button is not valid any more."
    assert "Approvals 0/1" in rig.telegram.message(CHAT_ID, card.message_id).plain_text


async def test_a_group_the_database_refuses_is_answered_503_and_the_next_is_stored(
    rig: Rig,
) -> None:
    db = Database(rig.database_url)
    try:
        await refuse_group(db, "refused")
        refused = await rig.post_alert(am_payload("refused"))
        # A 5xx makes Alertmanager send it again; a 200 would say it was stored.
        assert refused.status_code == 503
        assert "not stored" in refused.json()["detail"]
        stored = await rig.post_alert(am_payload("fine"))
        assert stored.status_code == 200 and stored.json()["created"]
        async with db.read() as session:
            groups = set(await session.scalars(select(Incident.group_key)))
        assert groups == {"fine"}
    finally:
        await db.dispose()
