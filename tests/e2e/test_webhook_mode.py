"""Webhook mode: Telegram pushes updates to opsgate, each one carrying the secret token."""

from __future__ import annotations

import httpx

from opsgate.handlers.http_guards import MAX_BODY_BYTES
from opsgate.services.approvals import APPROVE_RECEIVED
from tests.builders import ALICE, am_payload
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data
from tests.procs import free_port


async def test_updates_arrive_by_webhook_and_forged_ones_are_refused(rig_factory: Rig) -> None:
    rig = rig_factory
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/telegram"
    rig.overrides.update(
        http_port=port, telegram_webhook_url=url, telegram_webhook_secret="s3cret-Token_1"
    )
    await rig.start()
    try:
        assert any(c.method == "setWebhook" and c.params["url"] == url for c in rig.telegram.calls)
        assert not any(c.method == "getUpdates" for c in rig.telegram.calls)
        await rig.post_alert(am_payload())
        card = await rig.wait_card()
        query = rig.telegram.tap(
            CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
        )
        assert (await rig.telegram.wait_answer(query)).text == APPROVE_RECEIVED
        await rig.wait_reply(card.message_id)

        forged = {"update_id": 999, "callback_query": {"id": "1", "data": "v1:ap:x"}}
        async with httpx.AsyncClient() as client:
            wrong = await client.post(
                url, json=forged, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"}
            )
            missing = await client.post(url, json=forged)
            not_json = await client.post(
                url,
                content=b"nope",
                headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"},
            )
            # The secret is checked before the body is read: a forged update too large to
            # read is refused for its secret, not its size.
            oversized = await client.post(
                url,
                content=b"x" * (MAX_BODY_BYTES + 1),
                headers={"X-Telegram-Bot-Api-Secret-Token": "guess"},
            )
        assert (wrong.status_code, missing.status_code, not_json.status_code) == (403, 403, 400)
        assert oversized.status_code == 403
    finally:
        await rig.stop()
