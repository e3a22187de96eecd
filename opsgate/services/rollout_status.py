"""Has a change converged? Decided from object status the way ``kubectl rollout status`` does.

Pure functions over the API's JSON, so the rules are testable without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

PENDING = "pending"
DONE = "done"
FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    state: str
    message: str


def _waiting(message: str) -> Verdict:
    return Verdict(PENDING, message)


def deployment(obj: Obj) -> Verdict:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return _waiting("waiting for the deployment spec update to be observed")
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return Verdict(FAILED, "rollout exceeded its progress deadline")
    desired = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if updated < desired:
        return _waiting(f"{updated} of {desired} new replicas updated")
    total = status.get("replicas", 0)
    if total > updated:
        return _waiting(f"{total - updated} old replicas pending termination")
    available = status.get("availableReplicas", 0)
    if available < updated:
        return _waiting(f"{available} of {updated} updated replicas available")
    return Verdict(DONE, f"rollout complete, {available}/{desired} replicas available")


def statefulset(obj: Obj) -> Verdict:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    observed = status.get("observedGeneration", 0)
    if observed == 0 or meta.get("generation", 0) > observed:
        return _waiting("waiting for the statefulset spec update to be observed")
    desired = spec.get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    if ready < desired:
        return _waiting(f"{ready} of {desired} pods ready")
    if status.get("updateRevision") != status.get("currentRevision"):
        return _waiting(f"{status.get('updatedReplicas', 0)} of {desired} pods updated")
    return Verdict(DONE, f"rollout complete, {ready}/{desired} pods ready")


def daemonset(obj: Obj) -> Verdict:
    meta, status = obj.get("metadata", {}), obj.get("status", {})
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return _waiting("waiting for the daemonset spec update to be observed")
    desired = status.get("desiredNumberScheduled", 0)
    updated = status.get("updatedNumberScheduled", 0)
    if updated < desired:
        return _waiting(f"{updated} of {desired} pods updated")
    available = status.get("numberAvailable", 0)
    if available < desired:
        return _waiting(f"{available} of {desired} updated pods available")
    return Verdict(DONE, f"rollout complete, {available}/{desired} pods available")


WORKLOADS = {"deployment": deployment, "statefulset": statefulset, "daemonset": daemonset}


def pod_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def desired_pods(owner: Obj) -> int:
    """How many pods a pod's controller wants: replicas, or one per node for a daemonset."""
    if owner.get("kind") == "DaemonSet":
        return int(owner.get("status", {}).get("desiredNumberScheduled", 0))
    return int(owner.get("spec", {}).get("replicas", 1))


def back_to_strength(
    pods: list[Obj], owner_uid: str, deleted: str, desired: int, deleted_uid: str | None = None
) -> Verdict:
    """After deleting a controlled pod: does its controller have all the Ready pods it wants?

    Counting against the controller's desired number (not "some new pod") handles both a
    controller that replaces the pod and one that was over strength and simply lets it go.
    The deleted pod is known by its uid when there is one: a StatefulSet's replacement has the
    same name.
    """

    def is_deleted(pod: Obj) -> bool:
        meta = pod.get("metadata", {})
        if deleted_uid is not None:
            return bool(meta.get("uid") == deleted_uid)
        return bool(meta.get("name") == deleted)

    owned = [
        p
        for p in pods
        if not is_deleted(p)
        and not p["metadata"].get("deletionTimestamp")
        and any(r.get("uid") == owner_uid for r in p["metadata"].get("ownerReferences") or [])
    ]
    ready = sum(pod_ready(p) for p in owned)
    if ready >= desired:
        return Verdict(DONE, f"controller back to strength, {ready}/{desired} pods Ready")
    return _waiting(f"{ready}/{desired} pods Ready")
