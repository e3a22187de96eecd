"""Each allowed operation, run through the whole loop, changes the cluster as kubectl would."""

from __future__ import annotations

import pytest

from tests.builders import ALICE, BOB, CAROL, alert, am_payload, decision_buttons
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data


async def _run(rig: Rig, action: str, approvers: tuple[int, ...] = (CAROL,)) -> str:
    await rig.post_alert(am_payload(f"g:{action}", alert(action=action)))
    card = await rig.wait_card()
    data = approve_data(card)
    for user_id in approvers:
        query = rig.telegram.tap(
            CHAT_ID, card.message_id, rig.telegram.user(user_id, f"u{user_id}"), data
        )
        await rig.telegram.wait_answer(query)
    return (await rig.wait_reply(card.message_id)).plain_text


async def test_scale_changes_only_replicas(rig: Rig) -> None:
    before = rig.kube.get("deployments", "shop", "checkout")
    assert before is not None
    text = await _run(rig, "kubectl scale deployment/checkout --replicas=5 -n shop")
    assert "scaled from 2 to 5 replicas" in text
    after = rig.kube.get("deployments", "shop", "checkout")
    assert after is not None and after["spec"]["replicas"] == 5
    assert after["spec"]["template"] == before["spec"]["template"]
    assert any("/scale" in r.path for r in rig.kube.requests if r.method == "PATCH")


async def test_delete_pod_is_replaced(rig: Rig) -> None:
    pods = [
        p for p in rig.kube.list("pods", "shop") if p["metadata"]["name"].startswith("checkout")
    ]
    assert pods
    victim = pods[0]["metadata"]["name"]
    text = await _run(rig, f"kubectl delete pod/{victim} -n shop")
    assert f"pod shop/{victim} deleted" in text
    assert rig.kube.get("pods", "shop", victim) is None
    names = [p["metadata"]["name"] for p in rig.kube.list("pods", "shop")]
    assert len([n for n in names if n.startswith("checkout")]) == len(pods)


async def test_statefulset_restart_and_undo(rig: Rig) -> None:
    rig.kube.add_statefulset("shop", "db", replicas=1, image="db:1")
    rig.kube.set_image("statefulsets", "shop", "db", "db:2")
    text = await _run(rig, "kubectl rollout undo statefulset/db -n shop", approvers=(ALICE, BOB))
    assert "rolled back to revision 1" in text
    sts = rig.kube.get("statefulsets", "shop", "db")
    assert sts is not None
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "db:1"


async def test_daemonset_restart(rig: Rig) -> None:
    rig.kube.add_daemonset("shop", "agent", image="agent:1")
    await _run(rig, "kubectl rollout restart daemonset/agent -n shop")
    ds = rig.kube.get("daemonsets", "shop", "agent")
    assert ds is not None
    assert "kubectl.kubernetes.io/restartedAt" in ds["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize(("verb", "expected"), [("cordon", True), ("uncordon", False)])
async def test_cordon_and_uncordon(rig: Rig, verb: str, expected: bool) -> None:
    rig.kube.add_node("node-1")
    text = await _run(rig, f"kubectl {verb} node-1")
    assert f"node node-1 {verb}ed" in text
    node = rig.kube.get("nodes", None, "node-1")
    assert node is not None and bool(node["spec"].get("unschedulable", False)) is expected


async def test_refused_action_is_shown_without_buttons(rig: Rig) -> None:
    await rig.post_alert(am_payload("g-bad", alert(action="kubectl get pods -n shop")))
    card = await rig.wait_card()
    assert (
        "Action refused" in card.plain_text
        and "'get' is not an allowed operation" in card.plain_text
    )
    assert decision_buttons(card) == []


async def test_alert_without_action_has_no_buttons(rig: Rig) -> None:
    await rig.post_alert(am_payload("g-none", alert(action=None)))
    card = await rig.wait_card()
    assert "No remediation proposed" in card.plain_text and decision_buttons(card) == []
