"""Every operation kind as one spec: its risk, its syntax, what it acts on, what it does, its
plan, its inverse, how verification judges it (if at all), and the RBAC it needs.

The parser (operations.py) decides what an action *is*; this table decides everything opsgate
says and checks about it, and the agent gateway, the policy and verification read it rather
than keep tables of their own. Adding a kind means one entry here, its grammar in the parser
and its calls in the executor; tests/unit/test_operation_specs.py fails when a kind has no entry,
an entry lacks a part, its syntax does not parse to it, or the union of the entries' RBAC
differs from what deploy/kubernetes grants.

A plan is built from *facts* the executor reads from the cluster (``KubeExecutor.survey``):
plain JSON, stored with the approval, so the card is rendered from the database and the same
facts can be compared again just before the real call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard

from opsgate.services.operations import Operation, OperationKind
from opsgate.services.risk import Risk

Facts = Mapping[str, Any]


class PlanState(StrEnum):
    READY = "ready"
    # The target does not exist or the server refused the dry run: nothing to approve.
    REFUSED = "refused"
    # The cluster could not be asked (a timeout, a 503): approval stays open, the plan job reads
    # it again a few times while it is pending, and an execution that finds no plan read reads
    # it before anything is sent.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Plan:
    state: PlanState
    summary: str
    warnings: tuple[str, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)
    # How many times the cluster was asked for this plan: bounds the re-reads of an
    # unavailable one.
    reads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "summary": self.summary,
            "warnings": list(self.warnings),
            "facts": dict(self.facts),
            "reads": self.reads,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            PlanState(data["state"]),
            str(data.get("summary", "")),
            tuple(str(w) for w in data.get("warnings", ())),
            dict(data.get("facts") or {}),
            int(data.get("reads", 1)),
        )


class Scope(StrEnum):
    """What an operation's target belongs to, which decides who may approve it."""

    NAMESPACE = "namespace"
    # Nodes belong to no namespace: only a role over every namespace may touch them.
    NODE = "node"


class Check(StrEnum):
    """How verification judges a kind after it ran; a kind without one is not verified."""

    # The workload's rollout, as ``kubectl rollout status`` judges it.
    ROLLOUT = "rollout"
    # The deleted pod's controller is back to strength without it.
    REPLACEMENT = "replacement"


@dataclass(frozen=True)
class Grant:
    """One RBAC rule an operation needs (its plan, its calls, its proof and its verification)."""

    group: str  # "" is the core group
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    namespaced: bool = True


@dataclass(frozen=True)
class OperationSpec:
    kind: OperationKind
    default_risk: Risk
    syntax: str
    """What the action looks like, for agents (list_operations); it must parse to this kind."""
    scope: Scope
    takes_replicas: bool
    """Whether the action carries --replicas (an agent's parameters)."""
    describe: Callable[[Operation], str]
    """What will happen, in one line, before anything was read (the card's fallback)."""
    plan: Callable[[Operation, Facts], tuple[str, tuple[str, ...]]]
    """The plan's summary and warnings, from the facts the executor read."""
    watched: tuple[str, ...]
    """Facts that must be unchanged between the plan and the real call."""
    inverse: Callable[[Operation, Facts], Operation | None] | None
    """The operation that undoes a successful run, from the run's context; None: no undo."""
    verification: Check | None
    """An allow-list: only a kind that names its check is verified after it ran."""
    rbac: tuple[Grant, ...]


_WORKLOADS = ("deployments", "statefulsets", "daemonsets")
_READ_WORKLOAD = Grant("apps", _WORKLOADS, ("get",))
_PATCH_WORKLOAD = Grant("apps", _WORKLOADS, ("get", "patch"))


def _pods(n: Any) -> str:
    return f"{n} pod{'' if n == 1 else 's'}"


def _scale_plan(op: Operation, facts: Facts) -> tuple[str, tuple[str, ...]]:
    current = facts.get("replicas")
    summary = f"{current} -> {op.replicas} replicas"
    if current == op.replicas:
        return summary, (f"{op.target()} already runs {current} replicas: nothing changes",)
    if op.replicas == 0:
        return summary, (f"{op.target()} is stopped: no pod keeps running",)
    return summary, ()


def _restart_plan(op: Operation, facts: Facts) -> tuple[str, tuple[str, ...]]:
    return f"{_pods(facts.get('replicas'))} replaced, one rollout", ()


def _revision(number: Any, image: Any) -> str:
    return f"revision {number} (image {image or 'unknown'})"


def _undo_plan(op: Operation, facts: Facts) -> tuple[str, tuple[str, ...]]:
    summary = (
        f"{_revision(facts.get('revision'), facts.get('image'))} -> "
        f"{_revision(facts.get('to_revision'), facts.get('to_image'))}"
    )
    if facts.get("same_template"):
        return summary, (
            f"revision {facts.get('to_revision')} has the same pod template as the live one "
            "(only a restart stamp may differ): the undo changes nothing but the pods",
        )
    return summary, ()


def _delete_plan(op: Operation, facts: Facts) -> tuple[str, tuple[str, ...]]:
    pod = f"pod {op.name} ({facts.get('phase') or 'unknown'}, node {facts.get('node') or 'none'})"
    owner = facts.get("owner")
    if owner:
        return f"{pod} is replaced by {owner['kind']} {owner['name']}", ()
    return f"{pod} is deleted", ("the pod has no controller: nothing replaces it",)


def _cordon_plan(op: Operation, facts: Facts) -> tuple[str, tuple[str, ...]]:
    summary = f"node {op.name}, {_pods(facts.get('pods'))} stay, new pods go elsewhere"
    if facts.get("unschedulable"):
        return summary, (f"node {op.name} is cordoned already: nothing changes",)
    return summary, ()


def _uncordon_plan(op: Operation, facts: Facts) -> tuple[str, tuple[str, ...]]:
    summary = f"node {op.name} ({_pods(facts.get('pods'))}) accepts new pods again"
    if not facts.get("unschedulable"):
        return summary, (f"node {op.name} is not cordoned: nothing changes",)
    return summary, ()


def _scale_back(op: Operation, context: Facts) -> Operation | None:
    before = context.get("scale_from")
    if not isinstance(before, int) or before == op.replicas:
        return None
    return Operation(OperationKind.SCALE, op.target_kind, op.name, op.namespace, before)


def _undo_of(op: Operation, _context: Facts) -> Operation | None:
    # After a restart or an undo, the previous revision is the one that was live before it.
    return Operation(OperationKind.ROLLOUT_UNDO, op.target_kind, op.name, op.namespace)


def _node_flip(kind: OperationKind) -> Callable[[Operation, Facts], Operation | None]:
    def flip(op: Operation, _context: Facts) -> Operation | None:
        return Operation(kind, "node", op.name)

    return flip


SPECS: dict[OperationKind, OperationSpec] = {
    spec.kind: spec
    for spec in (
        OperationSpec(
            OperationKind.ROLLOUT_RESTART,
            Risk.MEDIUM,
            syntax="kubectl rollout restart deployment/NAME -n NAMESPACE",
            scope=Scope.NAMESPACE,
            takes_replicas=False,
            describe=lambda op: f"every pod of {op.target()} is replaced, one rollout",
            plan=_restart_plan,
            watched=("template",),
            inverse=_undo_of,
            verification=Check.ROLLOUT,
            rbac=(_PATCH_WORKLOAD,),
        ),
        OperationSpec(
            OperationKind.ROLLOUT_UNDO,
            Risk.HIGH,
            syntax="kubectl rollout undo deployment/NAME -n NAMESPACE",
            scope=Scope.NAMESPACE,
            takes_replicas=False,
            describe=lambda op: (
                f"{op.target()} goes back to its previous revision, every pod replaced"
            ),
            plan=_undo_plan,
            watched=("revision", "template"),
            inverse=_undo_of,
            verification=Check.ROLLOUT,
            rbac=(
                _PATCH_WORKLOAD,
                Grant("apps", ("replicasets",), ("list",)),
                Grant("apps", ("controllerrevisions",), ("list",)),
            ),
        ),
        OperationSpec(
            OperationKind.SCALE,
            Risk.MEDIUM,
            syntax="kubectl scale deployment/NAME -n NAMESPACE --replicas=N",
            scope=Scope.NAMESPACE,
            takes_replicas=True,
            describe=lambda op: f"{op.target()} is set to {op.replicas} replicas",
            plan=_scale_plan,
            watched=("replicas",),
            inverse=_scale_back,
            verification=Check.ROLLOUT,
            rbac=(
                Grant("apps", ("deployments", "statefulsets"), ("get",)),
                Grant("apps", ("deployments/scale", "statefulsets/scale"), ("patch",)),
            ),
        ),
        OperationSpec(
            OperationKind.DELETE_POD,
            Risk.LOW,
            syntax="kubectl delete pod NAME -n NAMESPACE",
            scope=Scope.NAMESPACE,
            takes_replicas=False,
            describe=lambda op: f"one pod ({op.target()}) is deleted",
            plan=_delete_plan,
            watched=("uid",),
            inverse=None,
            verification=Check.REPLACEMENT,
            rbac=(
                Grant("", ("pods",), ("get", "list", "delete")),
                # Verification reads the pod's controller, whatever its kind.
                Grant("apps", ("replicasets",), ("get",)),
                _READ_WORKLOAD,
            ),
        ),
        OperationSpec(
            OperationKind.CORDON,
            Risk.MEDIUM,
            syntax="kubectl cordon NODE",
            scope=Scope.NODE,
            takes_replicas=False,
            describe=lambda op: f"no new pods are scheduled on node {op.name}",
            plan=_cordon_plan,
            watched=("unschedulable",),
            inverse=_node_flip(OperationKind.UNCORDON),
            # A node has no rollout to wait for.
            verification=None,
            rbac=(
                Grant("", ("nodes",), ("get", "patch"), namespaced=False),
                # The plan counts the node's pods, in every namespace.
                Grant("", ("pods",), ("list",), namespaced=False),
            ),
        ),
        OperationSpec(
            OperationKind.UNCORDON,
            Risk.LOW,
            syntax="kubectl uncordon NODE",
            scope=Scope.NODE,
            takes_replicas=False,
            describe=lambda op: f"node {op.name} accepts new pods again",
            plan=_uncordon_plan,
            watched=("unschedulable",),
            inverse=_node_flip(OperationKind.CORDON),
            verification=None,
            rbac=(
                Grant("", ("nodes",), ("get", "patch"), namespaced=False),
                Grant("", ("pods",), ("list",), namespaced=False),
            ),
        ),
    )
}

# What a signature is over, per kind, beyond the operation itself: the plan's facts that fix
# what will be applied (services/action_digest.py). A re-read plan that differs in one of them
# is a new thing to sign; the other facts only describe, and the check just before the real
# call (``watched``) guards the target's state.
SIGNED_FACTS: dict[OperationKind, tuple[str, ...]] = {
    # The pod template whose pods are replaced.
    OperationKind.ROLLOUT_RESTART: ("template",),
    # The revision it goes back to, and that revision's pod template.
    OperationKind.ROLLOUT_UNDO: ("to_revision", "to_template"),
    # The count it goes from: the target count is the operation's own parameter.
    OperationKind.SCALE: ("replicas",),
    # The one pod, by its uid: a pod of the same name created since is another pod.
    OperationKind.DELETE_POD: ("uid",),
    # A node is named by the operation, and the flip is the whole change.
    OperationKind.CORDON: (),
    OperationKind.UNCORDON: (),
}


def signed_facts(op: Operation, facts: Facts) -> dict[str, Any]:
    """The part of a plan's facts a signature is over (absent facts are left out)."""
    return {key: facts[key] for key in SIGNED_FACTS[op.kind] if facts.get(key) is not None}


DEFAULT_RISK: dict[OperationKind, Risk] = {kind: spec.default_risk for kind, spec in SPECS.items()}


def spec_of(op: Operation) -> OperationSpec:
    return SPECS[op.kind]


def effective_risk(op: Operation, declared: Risk | None) -> Risk:
    """A proposer may raise the risk of an operation, never lower it below its default."""
    floor = spec_of(op).default_risk
    if declared is None or declared.rank < floor.rank:
        return floor
    return declared


def blast_radius(op: Operation) -> str:
    """One line a tired human can weigh before tapping, before the plan is known."""
    return spec_of(op).describe(op)


def verifiable(op: Operation) -> bool:
    """An allow-list: only kinds whose spec says so are verified after they ran."""
    return spec_of(op).verification is not None


def inverse(op: Operation, context: Facts) -> Operation | None:
    undo = spec_of(op).inverse
    return undo(op, context) if undo is not None else None


def make_plan(op: Operation, facts: Facts) -> Plan:
    summary, warnings = spec_of(op).plan(op, facts)
    return Plan(PlanState.READY, summary, warnings, dict(facts))


def changed_since(op: Operation, planned: Facts, now: Facts) -> str | None:
    """How the target differs from its plan, in the facts that matter; None when it does not."""
    diffs = [
        # A template is compared by its digest, which says nothing to a reader.
        "its pod template was changed"
        if key == "template"
        else f"{key} was {planned.get(key)} when planned, is {now.get(key)} now"
        for key in spec_of(op).watched
        if planned.get(key) != now.get(key)
    ]
    return "; ".join(diffs) if diffs else None


def plan_ready(stored_plan: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """Whether this stored plan (``Plan.to_dict()``) was read: the card shows what would change."""
    return stored_plan is not None and stored_plan.get("state") == PlanState.READY.value


def approvable(stored_plan: Mapping[str, Any] | None) -> bool:
    """Whether an approval with this stored plan may be approved: not while the plan is known
    to be unreadable (the cluster timed out or answered 503), for what would change cannot be
    shown. While the plan is still being read, it may: a signature made then stops counting
    once the plan binds the approval (ApprovalService.bind_plan)."""
    return stored_plan is None or stored_plan.get("state") != PlanState.UNAVAILABLE.value
