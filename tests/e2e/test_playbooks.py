"""Playbooks learned from verified fixes, proposed again, and (when switched on) auto-approved."""

from __future__ import annotations

from opsgate.sandbox.telegram_api import FakeMessage
from tests.builders import ALICE, BOB, CAROL, alert, am_payload, decision_buttons, policy
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data, real_writes
from tests.e2e.test_commands import ask
from tests.e2e.test_operability import one_loop

GROUP = '{}:{alertname="CheckoutErrors"}'


async def fix_and_resolve(rig: Rig, action: str) -> None:
    """One incident whose fix is approved, verified, and whose alert then resolves."""
    await one_loop(rig, am_payload(GROUP, alert("a", action=action)))
    card = await rig.wait_card()
    await rig.post_alert(am_payload(GROUP, alert("a", status="resolved", action=action)))
    await rig.wait_text(card.message_id, "RESOLVED")


async def wait_playbooks(rig: Rig, *needles: str) -> str:
    """Drafting and learning are independent jobs: wait until both show."""
    for _ in range(50):
        text = (await ask(rig, CHAT_ID, BOB, "bob", "/playbooks")).plain_text
        if all(n in text for n in needles):
            return text
    raise AssertionError(f"/playbooks never showed {needles!r}: {text}")


async def test_a_verified_fix_becomes_a_playbook_that_proposes_itself(rig: Rig) -> None:
    action = "kubectl rollout restart deployment/checkout -n shop"
    await fix_and_resolve(rig, action)
    listing = await wait_playbooks(rig, "#1 draft", "worked 1/1")
    assert "CheckoutErrors (namespace=shop,service=checkout)" in listing
    assert "worked 1/1, trust 0.65" in listing

    refused = await ask(rig, CHAT_ID, ALICE, "alice", "/playbook approve 1")
    assert "Only admins" in refused.plain_text
    usage = await ask(rig, CHAT_ID, CAROL, "carol", "/playbook approve one")
    assert "Usage" in usage.plain_text
    approved = await ask(rig, CHAT_ID, CAROL, "carol", "/playbook approve 1")
    assert "Playbook #1 is now approved" in approved.plain_text

    # The alert fires again in a new group, without an opsgate_action annotation.
    await rig.post_alert(am_payload("g-again", alert("b", action=None)))
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2)
    card = rig.cards()[1]
    assert action in card.plain_text
    assert "playbook #1, worked 1/1, trust 0.65" in card.plain_text
    assert approve_data(card)  # medium risk: a human still decides

    retired = await ask(rig, CHAT_ID, CAROL, "carol", "/playbook retire 1")
    assert "now retired" in retired.plain_text
    assert "None learned yet" in (await ask(rig, CHAT_ID, BOB, "bob", "/playbooks")).plain_text


async def _auto_approved_pod_delete(rig: Rig, *, controlled: bool) -> tuple[FakeMessage, int]:
    """A learned, approved playbook that deletes pod worker-0, fired again: its card, and
    how many pods were deleted before."""
    rig.policy = policy(auto_approve={"enabled": True, "min_trust": 0.6})
    await rig.start()
    # The same pod name at both incidents: owned by the checkout ReplicaSet, or bare.
    owner = rig.kube.list("replicasets", "shop")[0] if controlled else None
    rig.kube.add_pod("shop", "worker-0", owner=owner)
    action = "kubectl delete pod/worker-0 -n shop"
    await fix_and_resolve(rig, action)
    await wait_playbooks(rig, "#1 draft", "worked 1/1")
    await ask(rig, CHAT_ID, CAROL, "carol", "/playbook approve 1")
    rig.kube.add_pod("shop", "worker-0", owner=owner)  # the same pod is stuck again
    deletes_before = len(real_writes(rig, "DELETE"))
    await rig.post_alert(am_payload("g-auto", alert("b", action=None)))
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2)
    return await rig.stored(rig.cards()[1]), deletes_before


async def test_auto_approve_runs_a_trusted_low_risk_playbook(rig_factory: Rig) -> None:
    rig = rig_factory
    card, deletes_before = await _auto_approved_pod_delete(rig, controlled=True)
    reply = await rig.wait_reply(card.message_id)
    assert "Succeeded" in reply.plain_text and "approved by nobody" in reply.plain_text
    final = rig.telegram.message(CHAT_ID, card.message_id)
    assert "Auto-approved by playbook #1 (trust 0.65)" in final.plain_text
    assert decision_buttons(final) == []
    assert len(real_writes(rig, "DELETE")) == deletes_before + 1


async def test_auto_approve_stops_at_a_plan_warning_nobody_saw(rig_factory: Rig) -> None:
    rig = rig_factory
    card, deletes_before = await _auto_approved_pod_delete(rig, controlled=False)
    reply = await rig.wait_reply(card.message_id)
    assert "Failed" in reply.plain_text
    assert "replace" in reply.plain_text  # the delete pod plan's warning
    assert "nobody saw when it was approved; nothing was applied" in reply.plain_text
    assert len(real_writes(rig, "DELETE")) == deletes_before
    assert rig.kube.get("pods", "shop", "worker-0") is not None


async def test_auto_approve_never_covers_more_than_low_risk(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.policy = policy(auto_approve={"enabled": True, "min_trust": 0.1})
    await rig.start()
    await fix_and_resolve(rig, "kubectl rollout restart deployment/checkout -n shop")
    await wait_playbooks(rig, "#1 draft", "worked 1/1")
    await ask(rig, CHAT_ID, CAROL, "carol", "/playbook approve 1")
    await rig.post_alert(am_payload("g-again", alert("b", action=None)))
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2)
    card = rig.cards()[1]
    assert approve_data(card) and "Auto-approved" not in card.plain_text
