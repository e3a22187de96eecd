"""Policy reload over the API: validated first, swapped whole, pending approvals re-judged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from opsgate.sandbox.telegram_api import FakeMessage
from opsgate.services.approvals import APPROVE_RECEIVED
from opsgate.services.policy import Policy, PolicyDocument
from tests.builders import ALICE, BOB, CAROL, alert, am_payload, policy, policy_document
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data, real_writes

UNDO = "kubectl rollout undo deployment/checkout -n shop"
LAPSED = "Signature of @alice no longer counts (not in the policy any more)"


def without_alice(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "users": [u for u in document["users"] if u["id"] != ALICE]}


async def start_with_policy_file(rig: Rig, document: dict[str, Any]) -> Path:
    path = rig.tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    rig.policy = policy()
    rig.overrides["policy_file"] = str(path)
    await rig.start()
    return path


async def undo_card_signed_by_alice(rig: Rig) -> FakeMessage:
    """A rollout undo at high risk (quorum 2) that alice has signed."""
    rig.kube.set_image("deployments", "shop", "checkout", "checkout:2")
    await rig.post_alert(am_payload("g-undo", alert(action=UNDO)))
    card = await rig.wait_card()
    first = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    assert (await rig.telegram.wait_answer(first)).text == APPROVE_RECEIVED
    return await rig.wait_text(card.message_id, "Approvals 1/2: @alice")


async def test_a_reload_without_a_signer_lapses_the_signature_and_the_new_quorum_decides(
    rig_factory: Rig,
) -> None:
    rig = rig_factory
    path = await start_with_policy_file(rig, policy_document())
    card = await undo_card_signed_by_alice(rig)
    data = approve_data(card)

    path.write_text(yaml.safe_dump(without_alice(policy_document())))
    response = await rig.client.post("/api/v1/policy/reload")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["generation"], body["users"]) == ("reloaded", 2, 4)
    assert body["pending"] == {"checked": 1, "resynced": 1, "approved": 0}

    # The card is re-synced by the reload itself, before anyone taps again.
    card = await rig.wait_text(card.message_id, LAPSED)
    assert "Approvals 0/2: none yet" in card.plain_text

    bob = rig.telegram.tap(CHAT_ID, card.message_id, rig.telegram.user(BOB, "bob"), data)
    assert (await rig.telegram.wait_answer(bob)).text == APPROVE_RECEIVED
    card = await rig.wait_text(card.message_id, "Approvals 1/2: @bob")
    assert LAPSED in card.plain_text
    assert real_writes(rig) == []

    carol = rig.telegram.tap(CHAT_ID, card.message_id, rig.telegram.user(CAROL, "carol"), data)
    assert (await rig.telegram.wait_answer(carol)).text == APPROVE_RECEIVED
    reply = await rig.wait_reply(card.message_id)
    assert "rolled back to revision 1" in reply.plain_text
    assert "@alice" not in reply.plain_text
    final = await rig.wait_text(card.message_id, "Done")
    assert "Approved by @bob, @carol" in final.plain_text and LAPSED in final.plain_text
    assert len(real_writes(rig)) == 1


async def test_a_broken_file_is_refused_with_its_reasons_and_the_old_policy_stays(
    rig_factory: Rig,
) -> None:
    rig = rig_factory
    path = await start_with_policy_file(rig, policy_document())
    card = await undo_card_signed_by_alice(rig)

    broken = without_alice(policy_document())
    broken["users"][0]["roles"] = ["oncal"]
    path.write_text(yaml.safe_dump(broken))
    response = await rig.client.post("/api/v1/policy/reload")
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any("users.0.roles.0" in e and "undefined role 'oncal'" in e for e in errors), errors
    shown = (await rig.client.get("/api/v1/policy")).json()
    assert (shown["generation"], shown["users"]) == (1, 5)

    # Under the policy still in force alice's signature counts: bob's completes the quorum.
    bob = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(BOB, "bob"), approve_data(card)
    )
    assert (await rig.telegram.wait_answer(bob)).text == APPROVE_RECEIVED
    reply = await rig.wait_reply(card.message_id)
    assert "rolled back to revision 1" in reply.plain_text


async def test_a_reload_that_lowers_the_quorum_approves_what_is_already_signed(
    rig_factory: Rig,
) -> None:
    rig = rig_factory
    path = await start_with_policy_file(rig, policy_document())
    card = await undo_card_signed_by_alice(rig)

    path.write_text(yaml.safe_dump(policy_document({"high": 1})))
    response = await rig.client.post("/api/v1/policy/reload")
    assert response.status_code == 200, response.text
    assert response.json()["pending"] == {"checked": 1, "resynced": 0, "approved": 1}
    reply = await rig.wait_reply(card.message_id)
    assert "rolled back to revision 1" in reply.plain_text and "@alice" in reply.plain_text


async def test_reload_needs_the_token_and_a_policy_file(rig: Rig) -> None:
    anonymous = await rig.client.post("/api/v1/policy/reload", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    # The rig starts without OPSGATE_POLICY_FILE: there is nothing to read.
    response = await rig.client.post("/api/v1/policy/reload")
    assert response.status_code == 409
    assert "OPSGATE_POLICY_FILE" in response.json()["errors"][0]


async def test_a_restart_with_an_edited_policy_updates_pending_cards(rig_factory: Rig) -> None:
    rig = rig_factory
    await rig.start()
    card = await undo_card_signed_by_alice(rig)

    await rig.stop()
    rig.policy = Policy(PolicyDocument.model_validate(without_alice(policy_document())))
    await rig.start()
    card = await rig.wait_text(card.message_id, LAPSED)
    assert "Approvals 0/2: none yet" in card.plain_text
