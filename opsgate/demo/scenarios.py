"""The demo's ready-made incidents, as data: the alert, how the cluster misbehaves, what to do.

Each scenario names an Alertmanager v4 alert (posted to opsgate's real webhook), an optional
fault arranged in the simulated cluster first, and the moves a person makes in headless mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opsgate.sandbox.kube_api import FakeKube

NAMESPACE = "shop"
NODES = ("node-a", "node-b", "node-c")


def seed_cluster(kube: FakeKube) -> None:
    """The cluster every scenario plays in: a small shop on three nodes."""
    for node in NODES:
        kube.add_node(node)
    kube.add_deployment(NAMESPACE, "checkout", replicas=2, image="checkout:1.4.2")
    kube.add_deployment(NAMESPACE, "search", replicas=2, image="search:2.3.0")
    kube.add_deployment(NAMESPACE, "payments", replicas=3, image="payments:3.0.9")
    # The bad release: revision 2 is what the alert blames, undo goes back to revision 1.
    kube.set_image("deployments", NAMESPACE, "payments", "payments:3.1.0")
    kube.add_deployment(NAMESPACE, "cart", replicas=2, image="cart:0.9.1")
    kube.add_deployment(NAMESPACE, "inventory", replicas=1, image="inventory:5.2.0")
    kube.add_deployment(NAMESPACE, "worker", replicas=2, image="worker:1.0.3")


@dataclass(frozen=True)
class Alert:
    """One Alertmanager alert of a scenario; ``action`` becomes the opsgate_action annotation."""

    alertname: str
    summary: str
    labels: dict[str, str]
    action: str | None = None
    risk: str | None = None
    severity: str = "critical"


@dataclass(frozen=True)
class Fault:
    """A failure the simulated API server answers a real (not dry-run) write with."""

    path: str
    status: int
    count: int = 1


@dataclass(frozen=True)
class Move:
    """A person's move in headless mode: tap a card button, or write in the on-call chat.

    ``button`` is matched against the start of the callback data (``v1:ap:`` approves);
    ``wait`` is text to see on the card (or in the reply) before the next move.
    """

    person: str
    button: str | None = None
    text: str | None = None
    # The text is written as a reply to the card (how /timeline finds its incident).
    on_card: bool = False
    wait: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    blurb: str
    alert: Alert
    fault: Fault | None = None
    # The alert resolves by itself a moment after the card is out, before anyone approves.
    resolves_early: bool = False
    # A first, identical incident is fixed, verified, resolved and its playbook approved first.
    learned: bool = False
    moves: tuple[Move, ...] = ()
    # Text the final transcript must show (the headless mode's own check, and the tests').
    expect: tuple[str, ...] = field(default_factory=tuple)


APPROVE = "v1:ap:"


def _deployment(name: str) -> str:
    return rf"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}$"


def _labels(service: str, **extra: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "service": service, **extra}


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="crashloop",
        title="Crash-looping deployment",
        blurb="checkout pods restart over and over; a restart needs one approval.",
        alert=Alert(
            "KubePodCrashLooping",
            "checkout pods are crash-looping",
            _labels("checkout", pod="checkout-7d9f-x2k4q"),
            action="kubectl rollout restart deployment/checkout -n shop",
        ),
        moves=(
            Move("approver1", button=APPROVE, wait="Succeeded"),
            Move("approver1", text="/timeline", on_card=True, wait="result_posted"),
        ),
        expect=("KubePodCrashLooping", "Succeeded", "execution_succeeded", "result_posted"),
    ),
    Scenario(
        name="latency",
        title="Latency alert",
        blurb="search p95 is above its SLO; scale it from 2 to 4 replicas.",
        alert=Alert(
            "HighLatency",
            "search p95 latency 1.8 s (SLO 300 ms)",
            _labels("search"),
            action="kubectl scale deployment/search --replicas=4 -n shop",
            severity="warning",
        ),
        moves=(Move("approver1", button=APPROVE, wait="Succeeded"),),
        expect=("HighLatency", "2 -> 4 replicas", "Succeeded"),
    ),
    Scenario(
        name="bad-release",
        title="Bad release",
        blurb="payments 3.1.0 fails; undo the rollout. Critical: two approvers.",
        alert=Alert(
            "PaymentsErrorBudgetBurn",
            "payments errors since the 3.1.0 rollout",
            _labels("payments"),
            action="kubectl rollout undo deployment/payments -n shop",
            risk="critical",
        ),
        moves=(
            Move("approver1", button=APPROVE, wait="Approvals 1/2"),
            Move("approver2", button=APPROVE, wait="Succeeded"),
        ),
        expect=("PaymentsErrorBudgetBurn", "Approvals 1/2", "Succeeded"),
    ),
    Scenario(
        name="node",
        title="Node problem",
        blurb="node-b reports disk pressure; cordon it so nothing new lands there.",
        alert=Alert(
            "NodeDiskPressure",
            "node-b is under disk pressure",
            {"node": "node-b", "instance": "node-b:9100"},
            action="kubectl cordon node-b",
            severity="warning",
        ),
        moves=(Move("approver1", button=APPROVE, wait="Succeeded"),),
        expect=("NodeDiskPressure", "node node-b cordoned"),
    ),
    Scenario(
        name="transient",
        title="Transient API failure",
        blurb="the API server answers 503 once; opsgate retries and the card shows it.",
        alert=Alert(
            "CartErrors",
            "cart 5xx above 5%",
            _labels("cart"),
            action="kubectl rollout restart deployment/cart -n shop",
        ),
        fault=Fault(_deployment("cart"), 503),
        moves=(Move("approver1", button=APPROVE, wait="Succeeded"),),
        expect=("attempt 1 failed: 503", "2 attempts", "Succeeded"),
    ),
    Scenario(
        name="permanent",
        title="Permanent failure",
        blurb="the API server refuses the change (403); opsgate does not retry.",
        alert=Alert(
            "InventoryStale",
            "inventory has not synced for 20 min",
            _labels("inventory"),
            action="kubectl rollout restart deployment/inventory -n shop",
        ),
        fault=Fault(_deployment("inventory"), 403, count=5),
        moves=(Move("approver1", button=APPROVE, wait="Failed"),),
        expect=("Failed", "403", "not retried"),
    ),
    Scenario(
        name="outside-allowlist",
        title="Action outside the allowlist",
        blurb="the alert proposes deleting a namespace; opsgate refuses to offer it.",
        alert=Alert(
            "ShopDegraded",
            "shop namespace degraded",
            _labels("shop"),
            action="kubectl delete namespace shop",
        ),
        moves=(Move("viewer", text="/whoami", wait="vic"),),
        expect=("Action refused",),
    ),
    Scenario(
        name="resolves",
        title="Resolves before approval",
        blurb="checkout errors clear up by themselves before anyone taps Approve.",
        alert=Alert(
            "CheckoutErrors",
            "checkout 5xx above 5%",
            _labels("checkout"),
            action="kubectl rollout restart deployment/checkout -n shop",
        ),
        resolves_early=True,
        expect=("RESOLVED", "alert resolved before approval"),
    ),
    Scenario(
        name="learned-playbook",
        title="Second firing: the learned playbook",
        blurb="worker's backlog alert was fixed by a restart before; now opsgate proposes it.",
        alert=Alert(
            "QueueBacklog",
            "worker queue backlog above 10k",
            _labels("worker"),
            action="kubectl rollout restart deployment/worker -n shop",
        ),
        learned=True,
        moves=(Move("approver1", button=APPROVE, wait="Succeeded"),),
        expect=("playbook #1", "Succeeded"),
    ),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def v4_payload(
    alert: Alert,
    *,
    key: str,
    external_url: str,
    status: str = "firing",
    with_action: bool = True,
) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) for one alert of group ``key``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {"alertname": alert.alertname, "severity": alert.severity, **alert.labels}
    annotations = {"summary": alert.summary}
    if alert.action is not None and with_action:
        annotations["opsgate_action"] = alert.action
    if alert.risk is not None:
        annotations["opsgate_risk"] = alert.risk
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alert.alertname}",demo="{key}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "opsgate",
        "groupLabels": {"alertname": alert.alertname},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else now,
                "generatorURL": f"{external_url}/graph",
                "fingerprint": f"{key}-{alert.alertname}".lower(),
            }
        ],
    }
