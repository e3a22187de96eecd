"""The demo's state as JSON for the page: the chats as Telegram shows them, and the cluster.

Messages go out as plain text plus Telegram's entities, never as HTML: the page builds its
DOM from them, so nothing a message says can become markup.
"""

from __future__ import annotations

from typing import Any

from opsgate.demo.scenarios import NAMESPACE, SCENARIOS
from opsgate.demo.session import PEOPLE, DemoSession
from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage

Json = dict[str, Any]

# The entities the page renders; any other is shown as plain text.
RENDERED_ENTITIES = frozenset(
    {"bold", "italic", "underline", "strikethrough", "code", "pre", "text_link", "date_time"}
)
REVISION = "deployment.kubernetes.io/revision"


def snapshot(demo: DemoSession) -> Json:
    return {
        "people": [{"key": p.key, "label": p.label, "username": p.user.username} for p in PEOPLE],
        "scenarios": [{"name": s.name, "title": s.title, "blurb": s.blurb} for s in SCENARIOS],
        "fired": list(demo.fired),
        "chats": [
            {
                "id": chat.id,
                "type": chat.type,
                "title": chat.title,
                "topic": chat.topic,
                "person": chat.person,
                "messages": [message_json(m) for m in demo.telegram.messages(chat.id)],
            }
            for chat in demo.chats
        ],
        "cluster": cluster_json(demo.kube),
    }


def message_json(message: FakeMessage) -> Json:
    rows = message.reply_markup["inline_keyboard"] if message.reply_markup else []
    return {
        "id": message.message_id,
        "from_bot": message.from_bot,
        "sender": message.sender.first_name,
        "username": message.sender.username,
        "date": message.date,
        "edits": message.edit_count,
        "reply_to": message.reply_to_message_id,
        "text": message.plain_text,
        "entities": [e for e in message.entities if e.get("type") in RENDERED_ENTITIES],
        "keyboard": [
            [{"text": b["text"], "data": b.get("callback_data"), "url": b.get("url")} for b in row]
            for row in rows
        ],
    }


def cluster_json(kube: FakeKube) -> Json:
    pods = kube.list("pods", NAMESPACE)
    deployments = []
    for deployment in kube.list("deployments", NAMESPACE):
        name = deployment["metadata"]["name"]
        status = deployment.get("status", {})
        containers = deployment["spec"]["template"]["spec"].get("containers", [])
        deployments.append(
            {
                "name": name,
                "replicas": deployment["spec"].get("replicas", 1),
                "ready": status.get("readyReplicas", 0),
                "revision": deployment["metadata"].get("annotations", {}).get(REVISION, "?"),
                "image": containers[0]["image"] if containers else "",
                "pods": [_pod_json(p) for p in pods if _owned_by(p, name)],
            }
        )
    nodes = [
        {
            "name": node["metadata"]["name"],
            "cordoned": bool(node.get("spec", {}).get("unschedulable", False)),
            "ready": _condition(node, "Ready"),
        }
        for node in kube.list("nodes")
    ]
    return {"namespace": NAMESPACE, "deployments": deployments, "nodes": nodes}


def _owned_by(pod: Json, deployment: str) -> bool:
    """A deployment's pods are named after its ReplicaSets: ``name-<hash>-<suffix>``."""
    owners = pod["metadata"].get("ownerReferences", [])
    return any(
        o.get("kind") == "ReplicaSet" and o.get("name", "").rsplit("-", 1)[0] == deployment
        for o in owners
    )


def _pod_json(pod: Json) -> Json:
    containers = pod["spec"].get("containers", [])
    return {
        "name": pod["metadata"]["name"],
        "node": pod["spec"].get("nodeName"),
        "image": containers[0]["image"] if containers else "",
        "ready": _condition(pod, "Ready"),
        "phase": pod.get("status", {}).get("phase", "Pending"),
        "terminating": "deletionTimestamp" in pod["metadata"],
    }


def _condition(obj: Json, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )
