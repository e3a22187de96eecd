"""Every operation kind has a whole spec, and the specs' RBAC is what deploy/kubernetes grants."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from opsgate.services.action_digest import operation_digest
from opsgate.services.operation_specs import (
    SIGNED_FACTS,
    SPECS,
    OperationSpec,
    Plan,
    PlanState,
    changed_since,
    inverse,
    make_plan,
    verifiable,
)
from opsgate.services.operations import Operation, OperationKind, parse_operation
from opsgate.services.risk import Risk
from tests.integration.test_rbac import Access, grants_of
from tests.manifests import TARGETS, render

EXAMPLES = {
    OperationKind.ROLLOUT_RESTART: "kubectl rollout restart deployment/checkout -n shop",
    OperationKind.ROLLOUT_UNDO: "kubectl rollout undo deployment/checkout -n shop",
    OperationKind.SCALE: "kubectl scale deployment/checkout --replicas=6 -n shop",
    OperationKind.DELETE_POD: "kubectl delete pod/checkout-abc -n shop",
    OperationKind.CORDON: "kubectl cordon worker-1",
    OperationKind.UNCORDON: "kubectl uncordon worker-1",
}


def test_every_kind_has_a_spec_with_every_part() -> None:
    assert set(SPECS) == set(OperationKind)
    assert set(EXAMPLES) == set(OperationKind), "add an example action for the new kind"
    for kind, spec in SPECS.items():
        assert spec.kind is kind
        for part in dataclasses.fields(OperationSpec):
            value = getattr(spec, part.name)
            # inverse may be None (no undo) and verifiable False, but both must be decided.
            if part.name in ("inverse", "verifiable"):
                continue
            assert value, f"{kind}: the spec has no {part.name}"
        assert isinstance(spec.default_risk, Risk)
        assert isinstance(spec.verifiable, bool)
        op = parse_operation(EXAMPLES[kind])
        assert spec.describe(op)
        summary, _warnings = spec.plan(op, {})
        assert summary, f"{kind}: the plan says nothing"


def test_verification_is_an_allow_list() -> None:
    verified = {kind for kind in OperationKind if verifiable(parse_operation(EXAMPLES[kind]))}
    assert verified == {kind for kind, spec in SPECS.items() if spec.verifiable}
    assert OperationKind.CORDON not in verified


def test_inverses() -> None:
    scale = parse_operation(EXAMPLES[OperationKind.SCALE])
    assert inverse(scale, {"scale_from": 3}) == dataclasses.replace(scale, replicas=3)
    assert inverse(scale, {}) is None
    restart = parse_operation(EXAMPLES[OperationKind.ROLLOUT_RESTART])
    undo = inverse(restart, {})
    assert undo is not None and undo.describe() == EXAMPLES[OperationKind.ROLLOUT_UNDO]
    cordon = parse_operation(EXAMPLES[OperationKind.CORDON])
    assert inverse(cordon, {}) == Operation(OperationKind.UNCORDON, "node", "worker-1")
    assert inverse(parse_operation(EXAMPLES[OperationKind.DELETE_POD]), {}) is None


@pytest.mark.parametrize(
    ("kind", "facts", "summary", "warning"),
    [
        (OperationKind.SCALE, {"replicas": 3}, "3 -> 6 replicas", None),
        (OperationKind.ROLLOUT_RESTART, {"replicas": 3}, "3 pods replaced, one rollout", None),
        (
            OperationKind.ROLLOUT_UNDO,
            {
                "revision": 4,
                "image": "checkout:1.2.0",
                "to_revision": 3,
                "to_image": "checkout:1.1.0",
                "same_template": False,
            },
            "revision 4 (image checkout:1.2.0) -> revision 3 (image checkout:1.1.0)",
            None,
        ),
        (
            OperationKind.ROLLOUT_UNDO,
            {"revision": 4, "image": "a", "to_revision": 3, "to_image": "a", "same_template": True},
            "revision 4 (image a) -> revision 3 (image a)",
            "same pod template",
        ),
        (
            OperationKind.DELETE_POD,
            {
                "phase": "Running",
                "node": "worker-1",
                "owner": {"kind": "ReplicaSet", "name": "checkout-7d9f"},
            },
            "pod checkout-abc (Running, node worker-1) is replaced by ReplicaSet checkout-7d9f",
            None,
        ),
        (
            OperationKind.DELETE_POD,
            {"phase": "Running", "node": "worker-1", "owner": None},
            "pod checkout-abc (Running, node worker-1) is deleted",
            "nothing replaces it",
        ),
        (
            OperationKind.CORDON,
            {"unschedulable": False, "pods": 14},
            "node worker-1, 14 pods stay, new pods go elsewhere",
            None,
        ),
    ],
)
def test_plan_texts(
    kind: OperationKind, facts: dict[str, object], summary: str, warning: str | None
) -> None:
    plan = make_plan(parse_operation(EXAMPLES[kind]), facts)
    assert plan.summary == summary
    if warning is None:
        assert plan.warnings == ()
    else:
        assert any(warning in w for w in plan.warnings)
    assert Plan.from_dict(plan.to_dict()) == plan


def test_a_changed_target_is_told_by_its_watched_facts() -> None:
    scale = parse_operation(EXAMPLES[OperationKind.SCALE])
    assert changed_since(scale, {"replicas": 3}, {"replicas": 3}) is None
    assert changed_since(scale, {"replicas": 3}, {"replicas": 5}) == (
        "replicas was 3 when planned, is 5 now"
    )
    restart = parse_operation(EXAMPLES[OperationKind.ROLLOUT_RESTART])
    # The pod count may move (an autoscaler); only the template makes the restart stale.
    assert (
        changed_since(restart, {"replicas": 3, "template": "a"}, {"replicas": 4, "template": "a"})
        is None
    )
    assert "template" in (changed_since(restart, {"template": "a"}, {"template": "b"}) or "")
    assert PlanState("refused") is PlanState.REFUSED


def test_the_specs_rbac_is_what_the_manifests_grant() -> None:
    wanted = {
        Access(verb, grant.group, resource, grant.namespaced)
        for spec in SPECS.values()
        for grant in spec.rbac
        for verb, resource in itertools.product(grant.verbs, grant.resources)
    }
    for target in TARGETS:
        grants = grants_of(render(target))
        for namespace, access in grants.by_namespace.items():
            assert access == {a for a in wanted if a.namespaced}, f"{target}: Role in {namespace}"
        assert grants.cluster == {a for a in wanted if not a.namespaced}, f"{target}: ClusterRole"


def test_every_kind_says_which_plan_facts_a_signature_is_over() -> None:
    assert set(SIGNED_FACTS) == set(OperationKind)
    undo = parse_operation(EXAMPLES[OperationKind.ROLLOUT_UNDO])
    facts = {"revision": 4, "to_revision": 3, "to_template": "t3", "template": "t4"}
    ready = Plan(PlanState.READY, "", (), facts).to_dict()
    bound = operation_digest(undo, ready)
    assert bound != operation_digest(undo)
    # The revision it goes back to is signed; what is live now only described (and watched).
    assert operation_digest(undo, {**ready, "facts": {**facts, "to_revision": 2}}) != bound
    assert operation_digest(undo, {**ready, "facts": {**facts, "to_template": "t2"}}) != bound
    assert operation_digest(undo, {**ready, "facts": {**facts, "revision": 5}}) == bound
    # A plan that is not ready binds nothing.
    unavailable = Plan(PlanState.UNAVAILABLE, "timeout", (), facts).to_dict()
    assert operation_digest(undo, unavailable) == operation_digest(undo)
    cordon = parse_operation(EXAMPLES[OperationKind.CORDON])
    node = Plan(PlanState.READY, "", (), {"unschedulable": False, "pods": 3}).to_dict()
    assert operation_digest(cordon, node) == operation_digest(cordon)
