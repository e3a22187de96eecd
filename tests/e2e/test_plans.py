"""The plan on the card: read from the target and dry-run when proposed, checked again just
before the real call; and Undo under a result, proposed for approval like any action."""

from __future__ import annotations

from opsgate.bot.callback_data import CardAction, UndoAction, encode
from opsgate.sandbox.telegram_api import FakeMessage
from tests.builders import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    MALLORY,
    VIEWER,
    alert,
    am_payload,
    decision_buttons,
)
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
SCALE = "kubectl scale deployment/checkout --replicas=6 -n shop"
RESTART = "kubectl rollout restart deployment/checkout -n shop"
UNDO = "kubectl rollout undo deployment/checkout -n shop"
DEPLOYMENT = r"/apis/apps/v1/namespaces/shop/deployments/checkout$"
DECISIONS = ["✅ Approve", "❌ Reject"]
# While the cluster cannot give the plan: nothing is approved blind.
REJECT_ONLY = ["❌ Reject"]


async def _card(rig: Rig, action: str, group: str = "g") -> FakeMessage:
    await rig.post_alert(am_payload(f"{group}:{action}", alert(action=action)))
    await rig.telegram.wait_for(lambda: bool(rig.cards()), 10)
    return await rig.stored(max(rig.cards(), key=lambda m: m.message_id))


async def _approve(rig: Rig, card: FakeMessage, *users: int) -> None:
    data = approve_data(rig.telegram.message(CHAT_ID, card.message_id))
    for user_id in users:
        tap = rig.telegram.tap(
            CHAT_ID, card.message_id, rig.telegram.user(user_id, f"u{user_id}"), data
        )
        await rig.telegram.wait_answer(tap)


def _replies(rig: Rig, card: FakeMessage) -> list[FakeMessage]:
    return [m for m in rig.bot_messages() if m.reply_to_message_id == card.message_id]


def _real(rig: Rig, method: str, path_part: str) -> list[object]:
    return [
        r for r in rig.kube.requests if r.method == method and path_part in r.path and not r.dry_run
    ]


async def test_scale_plan_on_the_card(rig: Rig) -> None:
    card = await _card(rig, SCALE)
    # The first post already carries the plan: Approve is offered for what was read.
    assert "2 -> 6 replicas" in card.plain_text
    assert [t for t, _ in decision_buttons(card)] == ["✅ Approve", "❌ Reject"]
    dry = [r for r in rig.kube.requests if r.path.endswith("/scale") and r.dry_run]
    assert len(dry) == 1, "the plan dry-runs the change"
    assert not _real(rig, "PATCH", "/scale")


async def test_restart_plan(rig: Rig) -> None:
    card = await _card(rig, RESTART)
    assert "2 pods replaced, one rollout" in card.plain_text


async def test_undo_plan_names_the_revisions(rig: Rig) -> None:
    rig.kube.set_image("deployments", "shop", "checkout", "checkout:1.2.0")
    card = await _card(rig, UNDO)
    assert "revision 2 (image checkout:1.2.0) -> revision 1 (image checkout:1)" in card.plain_text
    assert "same pod template" not in card.plain_text


async def test_delete_pod_plan_names_its_replacement(rig: Rig) -> None:
    rig.kube.add_node("worker-1")
    rig.kube.scale("deployments", "shop", "checkout", 3)
    await rig.eventually(lambda: len(_on_node(rig, "worker-1")) >= 1)
    pod = _on_node(rig, "worker-1")[0]
    owner = pod["metadata"]["ownerReferences"][0]["name"]
    name = pod["metadata"]["name"]
    card = await _card(rig, f"kubectl delete pod/{name} -n shop")
    assert f"pod {name} (Running, node worker-1) is replaced by ReplicaSet {owner}" in (
        card.plain_text
    )


async def test_delete_pod_without_controller_warns(rig: Rig) -> None:
    rig.kube.add_node("worker-1")
    rig.kube.add_pod("shop", "lonely")
    card = await _card(rig, "kubectl delete pod/lonely -n shop")
    assert "pod lonely (Running, node worker-1) is deleted" in card.plain_text
    assert "nothing replaces it" in card.plain_text


async def test_cordon_plan_counts_the_pods(rig: Rig) -> None:
    rig.kube.add_node("worker-1")
    # The pods that existed before the node was not scheduled; two new ones go there.
    rig.kube.scale("deployments", "shop", "checkout", 4)
    await rig.eventually(lambda: len(_on_node(rig, "worker-1")) == 2)
    card = await _card(rig, "kubectl cordon worker-1")
    assert "node worker-1, 2 pods stay, new pods go elsewhere" in card.plain_text


def _on_node(rig: Rig, node: str) -> list[dict[str, object]]:
    return [p for p in rig.kube.list("pods") if p["spec"].get("nodeName") == node]  # type: ignore[index]


async def test_a_missing_target_is_refused_before_approval(rig: Rig) -> None:
    card = await _card(rig, "kubectl scale deployment/nope --replicas=3 -n shop")
    card = await rig.wait_text(card.message_id, "does not exist")
    assert "deployment shop/nope does not exist" in card.plain_text
    assert decision_buttons(card) == [], "nothing to approve"
    assert not [r for r in rig.kube.requests if r.method == "PATCH"]


async def test_a_dry_run_the_server_refuses_is_shown_at_once(rig: Rig) -> None:
    rig.kube.inject("PATCH", r"/deployments/checkout/scale$", 422, dry_run=True)
    card = await _card(rig, SCALE)
    card = await rig.wait_text(card.message_id, "refused the dry run")
    assert "422" in card.plain_text
    assert decision_buttons(card) == []


async def test_a_target_changed_after_approval_stops_the_execution(rig: Rig) -> None:
    card = await _card(rig, SCALE)
    assert "2 -> 6 replicas" in card.plain_text
    # The executor's own dry run is held: meanwhile someone else scales the deployment.
    executor_dry_run = rig.kube.hold("PATCH", r"/deployments/checkout/scale$", dry_run=True)
    await _approve(rig, card, CAROL)
    await executor_dry_run.wait_arrived()
    rig.kube.scale("deployments", "shop", "checkout", 4)
    executor_dry_run.release()
    reply = await rig.wait_reply(card.message_id)
    assert "Failed" in reply.plain_text
    assert "changed since it was approved" in reply.plain_text
    assert "replicas was 2 when planned, is 4 now" in reply.plain_text
    assert "nothing was applied" in reply.plain_text
    assert not _real(rig, "PATCH", "/scale")
    deployment = rig.kube.get("deployments", "shop", "checkout")
    assert deployment is not None and deployment["spec"]["replicas"] == 4
    assert "↩️ Undo" not in [t for t, _ in reply.buttons]


async def test_an_unavailable_plan_is_read_again_until_the_cluster_answers(rig: Rig) -> None:
    rig.kube.inject("GET", DEPLOYMENT, 503)
    # The second read's dry run waits, so the card is seen as it was posted: without a plan.
    second_read = rig.kube.hold("PATCH", r"/deployments/checkout/scale$", dry_run=True)
    card = await _card(rig, SCALE)
    assert "plan unavailable" in card.plain_text and "503" in card.plain_text
    assert [t for t, _ in decision_buttons(card)] == REJECT_ONLY
    assert "Approve comes back once the plan is read" in card.plain_text
    # Nobody taps anything: the plan job reads the plan again by itself.
    await second_read.wait_arrived()
    second_read.release()
    card = await rig.wait_text(card.message_id, "2 -> 6 replicas")
    assert "plan unavailable" not in card.plain_text
    assert [t for t, _ in decision_buttons(card)] == DECISIONS
    assert not _real(rig, "PATCH", "/scale")


async def test_an_unavailable_plan_that_finds_no_target_takes_approve_away(rig: Rig) -> None:
    rig.kube.inject("GET", r"/deployments/nope$", 503)
    card = await _card(rig, "kubectl scale deployment/nope --replicas=3 -n shop")
    card = await rig.wait_text(card.message_id, "does not exist")
    assert "deployment shop/nope does not exist" in card.plain_text
    assert decision_buttons(card) == []


async def test_approve_is_refused_while_the_plan_is_unavailable(rig_factory: Rig) -> None:
    rig = rig_factory
    # After its one quick read, the plan is read at the longer interval.
    rig.overrides["plan_reads"] = 1
    await rig.start()
    rig.kube.inject("GET", DEPLOYMENT, 503)
    card = await _card(rig, SCALE)
    assert "plan unavailable" in card.plain_text
    assert [t for t, _ in decision_buttons(card)] == REJECT_ONLY
    # A client that still shows an Approve button (or forged data) approves nothing.
    approval_id = str(next(d for _, d in decision_buttons(card))).rsplit(":", 1)[1]
    stale = rig.telegram.tap_stale(
        CHAT_ID,
        card.message_id,
        rig.telegram.user(CAROL, "carol"),
        encode(CardAction(True, approval_id)),
    )
    answer = await rig.telegram.wait_answer(stale)
    assert answer.show_alert and "nothing is approved blind" in (answer.text or "")
    # Meanwhile the target goes away: the next read says so and takes the buttons away.
    rig.kube.delete("deployments", "shop", "checkout")
    card = await rig.wait_text(card.message_id, "does not exist")
    assert decision_buttons(card) == []
    assert "Approvals 0/" in card.plain_text
    assert not [r for r in rig.kube.requests if r.method in ("PATCH", "DELETE")]


def _undo_data(reply: FakeMessage) -> str:
    data = [d for t, d in reply.buttons if t == "↩️ Undo"]
    assert data, f"the result offers no Undo: {reply.buttons}"
    return str(data[0])


async def _undo_card(rig: Rig, old: FakeMessage, needle: str) -> FakeMessage:
    """The undo's own card, posted below the result; the old card keeps its text and only
    a link to the new one."""
    await rig.telegram.wait_for(lambda: len(rig.cards()) == 2, 10)
    card = await rig.wait_text(rig.cards()[-1].message_id, needle)
    assert card.message_id > old.message_id
    chat = str(CHAT_ID).removeprefix("-100")

    def retired() -> bool:
        markup = rig.telegram.message(CHAT_ID, old.message_id).reply_markup or {}
        rows = markup.get("inline_keyboard", [])
        return [b.get("url") for row in rows for b in row] == [
            f"https://t.me/c/{chat}/{card.message_id}"
        ]

    await rig.telegram.wait_for(retired, 10)
    return card


async def test_undo_of_a_scale_is_approved_and_applied(rig: Rig) -> None:
    card = await _card(rig, SCALE)
    await _approve(rig, card, CAROL)
    reply = await rig.wait_reply(card.message_id)
    assert "scaled from 2 to 6" in reply.plain_text
    # Alice proposes the undo; she cannot approve her own request, Bob does.
    tap = rig.telegram.tap(
        CHAT_ID, reply.message_id, rig.telegram.user(ALICE, "alice"), _undo_data(reply)
    )
    answer = await rig.telegram.wait_answer(tap)
    assert "Undo proposed on a new card" in answer.text and not answer.show_alert
    old_text = rig.telegram.message(CHAT_ID, card.message_id).text
    card = await _undo_card(rig, card, "6 -> 2 replicas")
    # The first card still says what was done.
    assert rig.telegram.message(CHAT_ID, rig.cards()[0].message_id).text == old_text
    assert "kubectl scale deployment/checkout -n shop --replicas=2" in card.plain_text
    assert [t for t, _ in decision_buttons(card)] == ["✅ Approve", "❌ Reject"]
    deployment = rig.kube.get("deployments", "shop", "checkout")
    assert deployment is not None and deployment["spec"]["replicas"] == 6, "nothing ran yet"
    # A second tap proposes nothing more.
    again = rig.telegram.tap(
        CHAT_ID, reply.message_id, rig.telegram.user(BOB, "bob"), _undo_data(reply)
    )
    assert "already" in (await rig.telegram.wait_answer(again)).text
    own = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(ALICE, "alice"), approve_data(card)
    )
    assert "someone else" in (await rig.telegram.wait_answer(own)).text
    await _approve(rig, card, BOB)
    second = await rig.wait_reply(card.message_id)
    assert "scaled from 6 to 2 replicas" in second.plain_text
    deployment = rig.kube.get("deployments", "shop", "checkout")
    assert deployment is not None and deployment["spec"]["replicas"] == 2


async def test_undo_of_a_restart_goes_back_and_warns(rig: Rig) -> None:
    card = await _card(rig, RESTART)
    await _approve(rig, card, CAROL)
    reply = await rig.wait_reply(card.message_id)
    assert "restarted" in reply.plain_text
    tap = rig.telegram.tap(
        CHAT_ID, reply.message_id, rig.telegram.user(CAROL, "carol"), _undo_data(reply)
    )
    await rig.telegram.wait_answer(tap)
    card = await _undo_card(rig, card, "-> revision 1")
    assert "revision 2 (image checkout:1) -> revision 1 (image checkout:1)" in card.plain_text
    # After a restart the previous revision runs the same pods: the card says so.
    assert "same pod template" in card.plain_text
    # An undo is high risk: two approvers, neither the one who proposed it.
    await _approve(rig, card, ALICE, DAVE)
    second = await rig.wait_reply(card.message_id)
    assert "rolled back to revision 1" in second.plain_text
    deployment = rig.kube.get("deployments", "shop", "checkout")
    assert deployment is not None
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    assert RESTARTED_AT not in annotations


async def test_undo_is_refused_by_the_policy(rig: Rig) -> None:
    rig.kube.add_node("worker-1")
    card = await _card(rig, "kubectl cordon worker-1")
    await _approve(rig, card, CAROL)
    reply = await rig.wait_reply(card.message_id)
    data = _undo_data(reply)
    # Alice's role may not touch nodes; Vic's none; Mallory is not in the policy.
    for user_id in (ALICE, VIEWER, MALLORY):
        tap = rig.telegram.tap(CHAT_ID, reply.message_id, rig.telegram.user(user_id, "x"), data)
        answer = await rig.telegram.wait_answer(tap)
        assert answer.show_alert and "Not allowed" in answer.text
    final = rig.telegram.message(CHAT_ID, card.message_id)
    assert decision_buttons(final) == [] and "uncordon" not in final.plain_text
    node = rig.kube.get("nodes", None, "worker-1")
    assert node is not None and node["spec"].get("unschedulable") is True


async def test_delete_pod_has_no_undo_and_forged_undo_is_refused(rig: Rig) -> None:
    rig.kube.add_pod("shop", "lonely")
    card = await _card(rig, "kubectl delete pod/lonely -n shop")
    approval_id = approve_data(card).rsplit(":", 1)[1]
    await _approve(rig, card, CAROL)
    reply = await rig.wait_reply(card.message_id)
    assert "↩️ Undo" not in [t for t, _ in reply.buttons]
    forged = rig.telegram.tap_forged(
        CHAT_ID,
        reply.message_id,
        rig.telegram.user(CAROL, "carol"),
        encode(UndoAction(approval_id)),
    )
    answer = await rig.telegram.wait_answer(forged)
    assert answer.show_alert
