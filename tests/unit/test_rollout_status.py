from typing import Any

from opsgate.services import rollout_status as rs


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 3},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 3, **status},
    }


def test_deployment_rules_follow_kubectl() -> None:
    assert (
        rs.deployment({"metadata": {"generation": 4}, "spec": {}, "status": {}}).state == rs.PENDING
    )
    assert rs.deployment(deployment(updatedReplicas=1)).message == "1 of 3 new replicas updated"
    old = rs.deployment(deployment(updatedReplicas=3, replicas=4))
    assert old.message == "1 old replicas pending termination"
    unavailable = rs.deployment(deployment(updatedReplicas=3, replicas=3, availableReplicas=2))
    assert unavailable.state == rs.PENDING
    done = rs.deployment(deployment(updatedReplicas=3, replicas=3, availableReplicas=3))
    assert done.state == rs.DONE
    stuck = deployment(
        updatedReplicas=1,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    assert rs.deployment(stuck).state == rs.FAILED


def test_statefulset_waits_for_the_update_revision() -> None:
    base = {"metadata": {"generation": 2}, "spec": {"replicas": 2}}
    waiting = {
        **base,
        "status": {
            "observedGeneration": 2,
            "readyReplicas": 2,
            "currentRevision": "a",
            "updateRevision": "b",
        },
    }
    assert rs.statefulset(waiting).state == rs.PENDING
    done = {
        **base,
        "status": {
            "observedGeneration": 2,
            "readyReplicas": 2,
            "currentRevision": "b",
            "updateRevision": "b",
        },
    }
    assert rs.statefulset(done).state == rs.DONE


def test_daemonset_counts_scheduled_and_available() -> None:
    ds = {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberAvailable": 2,
        },
    }
    assert rs.daemonset(ds).state == rs.PENDING
    ds["status"]["numberAvailable"] = 3
    assert rs.daemonset(ds).state == rs.DONE


def pod(name: str, owner: str, ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "ownerReferences": [{"uid": owner, "controller": True}]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_a_controller_must_be_back_to_strength() -> None:
    deleted = "a"
    assert rs.back_to_strength([pod("b", "rs1", True)], "rs1", deleted, 2).state == rs.PENDING
    not_ready = [pod("b", "rs1", True), pod("c", "rs1", False)]
    assert rs.back_to_strength(not_ready, "rs1", deleted, 2).state == rs.PENDING
    stranger = [pod("b", "rs1", True), pod("c", "other", True)]
    assert rs.back_to_strength(stranger, "rs1", deleted, 2).state == rs.PENDING
    gone_but_listed = [pod("a", "rs1", True), pod("b", "rs1", True)]
    assert rs.back_to_strength(gone_but_listed, "rs1", deleted, 2).state == rs.PENDING
    done = rs.back_to_strength([pod("b", "rs1", True), pod("c", "rs1", True)], "rs1", deleted, 2)
    assert done.state == rs.DONE and done.message == "controller back to strength, 2/2 pods Ready"
    # An over-strength controller simply lets the pod go.
    assert rs.back_to_strength([pod("b", "rs1", True)], "rs1", deleted, 1).state == rs.DONE


def test_desired_pods_per_controller_kind() -> None:
    assert rs.desired_pods({"kind": "ReplicaSet", "spec": {"replicas": 3}}) == 3
    assert rs.desired_pods({"kind": "DaemonSet", "status": {"desiredNumberScheduled": 4}}) == 4


def test_a_statefulset_pod_replaced_under_the_same_name_counts() -> None:
    old = pod("db-0", "sts1", True)
    old["metadata"]["uid"] = "old-uid"
    new = pod("db-0", "sts1", True)
    new["metadata"]["uid"] = "new-uid"
    # Before the replacement shows up, the old pod still listed does not count ...
    assert rs.back_to_strength([old], "sts1", "db-0", 1, "old-uid").state == rs.PENDING
    # ... and its replacement, with the same name, does.
    assert rs.back_to_strength([new], "sts1", "db-0", 1, "old-uid").state == rs.DONE
