"""Post-execution verification: convergence judged like `kubectl rollout status`, on the card."""

from __future__ import annotations

from tests.builders import ALICE, CAROL, alert, am_payload
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data

DEPLOYMENT = ("deployments", "shop", "checkout")


async def _run(
    rig: Rig, action: str = "kubectl rollout restart deployment/checkout -n shop"
) -> int:
    await rig.post_alert(am_payload(f"g:{action}", alert(action=action)))
    card = await rig.wait_card()
    tap = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    await rig.telegram.wait_answer(tap)
    await rig.wait_reply(card.message_id)
    return card.message_id


async def test_a_converged_rollout_is_verified_on_the_card(rig: Rig) -> None:
    card_id = await _run(rig)
    card = await rig.wait_text(card_id, "verified: rollout complete, 2/2 replicas available in")
    assert "Done" in card.plain_text


async def test_a_rollout_that_converges_later(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides["verify_poll_seconds"] = 0.2
    rig.kube.set_rollout_mode("manual", *DEPLOYMENT)
    await rig.start()
    card_id = await _run(rig)
    await rig.wait_text(card_id, "verifying…")
    rig.kube.converge(*DEPLOYMENT)
    await rig.wait_text(card_id, "verified: rollout complete")


async def test_a_rollout_past_its_progress_deadline_fails_verification(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides["verify_poll_seconds"] = 0.2
    rig.kube.set_rollout_mode("stuck", *DEPLOYMENT)
    await rig.start()
    card_id = await _run(rig)
    reply_before = [m.plain_text for m in rig.bot_messages() if m.reply_to_message_id == card_id]
    rig.kube.progress_deadline_exceeded(*DEPLOYMENT)
    card = await rig.wait_text(card_id, "verification failed: rollout exceeded its progress")
    assert "Done" in card.plain_text
    # The result already posted in the thread is left exactly as it was.
    after = [m for m in rig.bot_messages() if m.reply_to_message_id == card_id]
    assert [m.plain_text for m in after] == reply_before and after[0].edit_count == 0


async def test_a_rollout_that_never_converges_times_out(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides.update(verify_poll_seconds=0.2, verify_timeout_seconds=1.0)
    rig.kube.set_rollout_mode("stuck", *DEPLOYMENT)
    await rig.start()
    card_id = await _run(rig)
    card = await rig.wait_text(card_id, "verification timed out: not converged after 1 s")
    # The last thing kubectl would have said while waiting is kept as the reason.
    assert "replicas" in card.plain_text.split("timed out:")[1]


async def test_a_deleted_pod_is_verified_once_its_controller_is_back_to_strength(rig: Rig) -> None:
    pod = next(
        p["metadata"]["name"]
        for p in rig.kube.list("pods", "shop")
        if p["metadata"]["name"].startswith("checkout")
    )
    card_id = await _run(rig, f"kubectl delete pod/{pod} -n shop")
    await rig.wait_text(card_id, "verified: controller back to strength, 2/2 pods Ready")
    assert rig.kube.get("pods", "shop", pod) is None


async def test_verification_errors_never_touch_the_result(rig: Rig) -> None:
    # Reads fail only once the change is on its way: the plan and the check before the call
    # read the deployment too, and a refused read there would stop the execution itself.
    real_call = rig.kube.hold("PATCH", r"/deployments/checkout$", dry_run=False)
    await rig.post_alert(am_payload("g:verify", alert()))
    card_id = (await rig.wait_card()).message_id
    tap = rig.telegram.tap(
        CHAT_ID, card_id, rig.telegram.user(ALICE, "alice"), approve_data(rig.cards()[0])
    )
    await rig.telegram.wait_answer(tap)
    await real_call.wait_arrived()
    rig.kube.inject("GET", r"/deployments/checkout$", 403, count=50)
    real_call.release()
    await rig.wait_reply(card_id)
    card = await rig.wait_text(card_id, "verification failed: 403")
    assert "Done" in card.plain_text
    replies = [m for m in rig.bot_messages() if m.reply_to_message_id == card_id]
    assert len(replies) == 1 and "Succeeded" in replies[0].plain_text


async def test_cordon_needs_no_verification(rig: Rig) -> None:
    rig.kube.add_node("node-1")
    await rig.post_alert(am_payload("g-node", alert(action="kubectl cordon node-1")))
    card = await rig.wait_card()
    carol = rig.telegram.user(CAROL, "carol")
    await rig.telegram.wait_answer(
        rig.telegram.tap(CHAT_ID, card.message_id, carol, approve_data(card))
    )
    await rig.wait_reply(card.message_id)
    final = await rig.wait_text(card.message_id, "Done")
    assert "verif" not in final.plain_text


async def test_an_alert_that_keeps_firing_makes_it_degraded(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides.update(verify_poll_seconds=0.2, verify_alert_window_seconds=1.0)
    await rig.start()
    card_id = await _run(rig)
    card = await rig.wait_text(card_id, "verification: degraded")
    assert "rollout complete, 2/2 replicas available, but the alert still fires 1 s" in (
        card.plain_text
    )


async def test_an_alert_that_resolves_within_the_window_verifies(rig_factory: Rig) -> None:
    rig = rig_factory
    rig.overrides.update(verify_poll_seconds=0.2, verify_alert_window_seconds=30.0)
    await rig.start()
    action = "kubectl rollout restart deployment/checkout -n shop"
    card_id = await _run(rig, action)
    await rig.wait_text(card_id, "verifying…")
    await rig.post_alert(am_payload(f"g:{action}", alert(status="resolved", action=action)))
    card = await rig.wait_text(card_id, "verified: rollout complete")
    assert "RESOLVED" in card.plain_text
