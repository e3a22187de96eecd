"""Small builders for payloads and policies used across tests."""

from __future__ import annotations

from typing import Any

from opsgate.services.chat import CardView
from opsgate.services.policy import Policy, PolicyDocument
from opsgate.services.policy_source import PolicySource

ALICE, BOB, CAROL, MALLORY, VIEWER = 1001, 1002, 1003, 6666, 1009
# A second admin, so that every quorum of the test policy can be reached.
DAVE = 1004

# A kubeconfig that start-up accepts, for a cluster nobody listens on.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: here, context: {cluster: c, user: u}}]
current-context: here
"""


def alert(
    fingerprint: str = "fp1",
    *,
    status: str = "firing",
    alertname: str = "CheckoutErrors",
    namespace: str = "shop",
    action: str | None = "kubectl rollout restart deployment/checkout -n shop",
    risk: str | None = None,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    annotations = {"summary": "checkout 5xx above 5%"}
    if action is not None:
        annotations["opsgate_action"] = action
    if risk is not None:
        annotations["opsgate_risk"] = risk
    return {
        "status": status,
        "labels": {
            "alertname": alertname,
            "namespace": namespace,
            "severity": "critical",
            "service": "checkout",
            "pod": f"checkout-{fingerprint}",
            **(extra_labels or {}),
        },
        "annotations": annotations,
        "startsAt": "2026-11-28T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T03:20:00Z",
        "generatorURL": "http://prometheus.local/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def am_payload(
    group_key: str = '{}:{alertname="CheckoutErrors"}', *alerts: dict[str, Any]
) -> dict[str, Any]:
    alerts_list = list(alerts) or [alert()]
    status = "firing" if any(a["status"] == "firing" for a in alerts_list) else "resolved"
    first = alerts_list[0]
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "opsgate",
        "groupLabels": {"alertname": first["labels"]["alertname"]},
        "commonLabels": {k: v for k, v in first["labels"].items() if k not in ("pod",)},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": alerts_list,
    }


def policy(quorum: dict[str, int] | None = None, **extra: Any) -> Policy:
    """The test policy; ``extra`` adds top-level sections (routes, notifiers, ...)."""
    return Policy(PolicyDocument.model_validate(policy_document(quorum, **extra)))


def policy_source(quorum: dict[str, int] | None = None, **extra: Any) -> PolicySource:
    """The test policy in the holder services read it from."""
    return PolicySource(policy(quorum, **extra))


def policy_document(quorum: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    """The test policy as the YAML file of a real ``opsgate serve`` would hold it."""
    return {
        **extra,
        "roles": {
            "oncall": {
                "namespaces": ["shop"],
                "operations": ["rollout_restart", "rollout_undo", "scale", "delete_pod"],
                "risk_levels": ["low", "medium", "high"],
                "alerts": ["silence", "ack"],
            },
            "admin": {
                "namespaces": ["*"],
                "operations": ["*"],
                "risk_levels": ["low", "medium", "high", "critical"],
                "alerts": ["silence", "ack"],
            },
            "viewer": {"namespaces": [], "operations": [], "risk_levels": []},
        },
        "users": [
            {"id": ALICE, "name": "alice", "roles": ["oncall"]},
            {"id": BOB, "name": "bob", "roles": ["oncall"]},
            {"id": CAROL, "name": "carol", "roles": ["admin"]},
            {"id": DAVE, "name": "dave", "roles": ["admin"]},
            {"id": VIEWER, "name": "vic", "roles": ["viewer"]},
        ],
        "quorum": quorum or {"low": 1, "medium": 1, "high": 2, "critical": 2},
    }


def pending_card(incident_id: str = "INC-TEST") -> CardView:
    """A card as opsgate renders it for a fresh alert with a restart waiting for approval."""
    return CardView(
        incident_id=incident_id,
        incident_status="firing",
        severity="critical",
        alertname="CheckoutErrors",
        summary="checkout 5xx above 5%",
        service="checkout",
        namespace="shop",
        firing_count=1,
        alert_count=1,
        labels={},
        action="kubectl rollout restart deployment/checkout -n shop",
        risk="medium",
        approval_id="ap1",
        approval_status="pending",
        required_approvals=1,
    )


def decision_buttons(message: Any) -> list[tuple[str, str | None]]:
    """A card's Approve / Reject buttons, without the silence and ack ones a firing card keeps."""
    buttons: list[tuple[str, str | None]] = message.buttons
    return [(t, d) for t, d in buttons if d and d.startswith(("v1:ap:", "v1:rj:"))]
