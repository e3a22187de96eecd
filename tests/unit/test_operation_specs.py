"""Every operation kind has a whole spec, and the specs' RBAC is what deploy/kubernetes grants."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import MISSING
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import select

from opsgate.services import rollout_status
from opsgate.services.action_digest import operation_digest
from opsgate.services.agent_gateway import operation_catalogue
from opsgate.services.agents import Agent, AgentRule
from opsgate.services.alertmanager import AmPayload
from opsgate.services.approvals import ApprovalService, RetryPolicy, Tapper
from opsgate.services.chat import ChatTarget, MessageRef
from opsgate.services.execution import ExecutionService
from opsgate.services.incidents import IncidentService
from opsgate.services.job_kinds import EXECUTE, ApprovalJob, JobKind
from opsgate.services.operation_specs import (
    SIGNED_FACTS,
    SPECS,
    Check,
    OperationSpec,
    Plan,
    PlanState,
    Scope,
    changed_since,
    inverse,
    make_plan,
)
from opsgate.services.operations import (
    Operation,
    OperationKind,
    OperationRefused,
    parse_operation,
)
from opsgate.services.playbooks import PlaybookService
from opsgate.services.policy import PolicyDocument, quorum_problems
from opsgate.services.risk import Risk
from opsgate.services.routing import Router
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Approval, Execution, Job
from opsgate.services.verification import VERIFYING, VerificationService
from tests.builders import CAROL, alert, am_payload, policy_source
from tests.integration.test_rbac import Access, grants_of
from tests.job_helpers import held_job
from tests.manifests import TARGETS, render

EXAMPLES = {
    OperationKind.ROLLOUT_RESTART: "kubectl rollout restart deployment/checkout -n shop",
    OperationKind.ROLLOUT_UNDO: "kubectl rollout undo deployment/checkout -n shop",
    OperationKind.SCALE: "kubectl scale deployment/checkout --replicas=6 -n shop",
    OperationKind.DELETE_POD: "kubectl delete pod/checkout-abc -n shop",
    OperationKind.CORDON: "kubectl cordon worker-1",
    OperationKind.UNCORDON: "kubectl uncordon worker-1",
}


# Optional parts: None and False are decisions (no undo, not verified, no --replicas) that
# every entry still states, since the spec's fields have no defaults.
_MAY_BE_EMPTY = {"inverse", "verification", "takes_replicas"}


def test_every_kind_has_a_spec_with_every_part() -> None:
    assert set(SPECS) == set(OperationKind)
    # list_operations shows the kinds in the table's order: the enum's.
    assert list(SPECS) == list(OperationKind)
    assert set(EXAMPLES) == set(OperationKind), "add an example action for the new kind"
    assert not [f.name for f in dataclasses.fields(OperationSpec) if f.default is not MISSING]
    for kind, spec in SPECS.items():
        assert spec.kind is kind
        for part in dataclasses.fields(OperationSpec):
            if part.name not in _MAY_BE_EMPTY:
                assert getattr(spec, part.name), f"{kind}: the spec has no {part.name}"
        assert isinstance(spec.default_risk, Risk)
        assert isinstance(spec.scope, Scope)
        assert isinstance(spec.takes_replicas, bool)
        assert spec.verification is None or isinstance(spec.verification, Check)
        op = parse_operation(EXAMPLES[kind])
        assert spec.describe(op)
        summary, _warnings = spec.plan(op, {})
        assert summary, f"{kind}: the plan says nothing"


# The placeholders of a spec's syntax, filled in as an agent would.
_FILLED = {"NAME": "checkout", "NAMESPACE": "shop", "N": "3", "NODE": "worker-1"}


def _filled(syntax: str) -> str:
    return re.sub(r"\b[A-Z]+\b", lambda m: _FILLED[m.group()], syntax)


@pytest.mark.parametrize("kind", list(OperationKind))
def test_each_syntax_is_what_the_parser_reads_as_its_kind(kind: OperationKind) -> None:
    spec = SPECS[kind]
    for action in (_filled(spec.syntax), EXAMPLES[kind]):
        op = parse_operation(action)
        assert op.kind is kind, action
        assert op.is_namespaced is (spec.scope is Scope.NAMESPACE), action
        assert (op.replicas is not None) is spec.takes_replicas, action
    if spec.scope is Scope.NODE:
        with pytest.raises(OperationRefused, match="no namespace"):
            parse_operation(f"{_filled(spec.syntax)} -n shop")


def test_the_parser_refuses_with_every_kind_named() -> None:
    """A kind with a spec but no grammar in the parser is named by no refusal: this fails."""
    with pytest.raises(OperationRefused) as refused:
        parse_operation("kubectl drain worker-1")
    allowed = str(refused.value).partition("(allowed: ")[2].rstrip(")").split(", ")
    # The command words of a syntax: those before its first placeholder.
    words = [
        " ".join(itertools.takewhile(lambda w: not re.search("[A-Z]", w), s.syntax.split()[1:]))
        for s in SPECS.values()
    ]
    assert allowed == words


class _Executor:
    """Succeeds at once; execution then decides whether a verification follows."""

    async def execute(
        self,
        op: Operation,
        context: dict[str, Any],
        *,
        before_apply: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        if before_apply is not None:
            await before_apply()
        return f"{op.describe()} done"

    async def prove(self, op: Operation, context: dict[str, Any]) -> str | None:
        raise AssertionError("nothing was cut short")

    async def survey(self, op: Operation, *, dry_run: bool) -> dict[str, Any]:
        # The same target every time it is read: the plan the attempt reads for an approval
        # that had none, and the check just before the call, find nothing changed.
        return {"replicas": 2, "pods": 3, "unschedulable": False}


@pytest.mark.parametrize(
    ("kind", "check", "verified"),
    [
        # The table as it is: a kind whose spec names no check is not verified,
        (OperationKind.CORDON, SPECS[OperationKind.CORDON].verification, False),
        (OperationKind.ROLLOUT_RESTART, SPECS[OperationKind.ROLLOUT_RESTART].verification, True),
        # and the spec is what decides: no other list says cordon is never verified.
        (OperationKind.CORDON, Check.ROLLOUT, True),
        (OperationKind.ROLLOUT_RESTART, None, False),
    ],
)
async def test_verification_is_an_allow_list(
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    kind: OperationKind,
    check: Check | None,
    verified: bool,
) -> None:
    """Execution's real decision, on a real database, whether a verification job follows."""
    _changed(monkeypatch, kind, verification=check)
    approvals = ApprovalService(
        database, policy_source(), ttl=timedelta(hours=1), retry=RetryPolicy(1, 0.1)
    )
    incidents = IncidentService(
        database,
        approvals,
        router=Router(policy_source(), ChatTarget(-1)),
        playbooks=PlaybookService(database),
        policy=policy_source(),
    )
    await incidents.ingest_alertmanager(
        AmPayload.model_validate(am_payload("g", alert(action=EXAMPLES[kind])))
    )
    async with database.transaction() as session:
        approval = await session.scalar(select(Approval))
    assert approval is not None
    await approvals.decide(
        approval.id, Tapper(CAROL, "carol"), True, origin=MessageRef(-1, 1), origin_offers_it=True
    )
    job = await held_job(database, EXECUTE, ApprovalJob(approval_id=approval.id))
    await ExecutionService(database, _Executor()).run_job(job)
    async with database.transaction() as session:
        execution = await session.get(Execution, approval.id)
        verify = await session.scalar(select(Job).where(Job.kind == JobKind.VERIFY.value))
    assert execution is not None and execution.status == "succeeded"
    assert (verify is not None) is verified
    assert (execution.verification_status == VERIFYING) is verified


def _changed(monkeypatch: pytest.MonkeyPatch, kind: OperationKind, **parts: Any) -> None:
    monkeypatch.setitem(SPECS, kind, dataclasses.replace(SPECS[kind], **parts))


def test_list_operations_is_read_from_the_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent("a", AgentRule(token_sha256="0" * 64, operations=["*"], max_risk=Risk.HIGH))
    before = {o["kind"]: o for o in operation_catalogue(agent)}
    assert {k: o["syntax"] for k, o in before.items()} == {
        k.value: s.syntax for k, s in SPECS.items()
    }
    # An agent is told to give a namespace only where the parser takes one.
    assert {k: "namespace" in o["parameters"] for k, o in before.items()} == {
        k.value: s.scope is Scope.NAMESPACE for k, s in SPECS.items()
    }
    for kind, spec in list(SPECS.items()):
        _changed(
            monkeypatch,
            kind,
            syntax=f"syntax of {kind}",
            takes_replicas=not spec.takes_replicas,
            default_risk=Risk.CRITICAL,
        )
    after = {o["kind"]: o for o in operation_catalogue(agent)}
    for kind in OperationKind:
        assert after[kind.value]["syntax"] == f"syntax of {kind}"
        assert ("replicas" in after[kind.value]["parameters"]) is not (
            "replicas" in before[kind.value]["parameters"]
        )
        assert after[kind.value]["default_risk"] == "critical"
        assert not after[kind.value]["you_may_propose"]


def test_the_policy_reads_each_kinds_scope_from_its_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = PolicyDocument.model_validate(
        {
            "roles": {
                "shop": {
                    "namespaces": ["shop"],
                    "operations": ["cordon", "delete_pod"],
                    "risk_levels": ["low", "medium"],
                }
            },
            "users": [{"id": 1, "name": "ann", "roles": ["shop"]}],
            "quorum": {"low": 1, "medium": 1},
        }
    )

    def refused() -> set[str]:
        return {p.message.rpartition("approve ")[2] for p in quorum_problems(doc)}

    # Only a role over every namespace may approve a change to a node.
    assert refused() == {"cordon on nodes at medium risk"}
    _changed(monkeypatch, OperationKind.CORDON, scope=Scope.NAMESPACE)
    _changed(monkeypatch, OperationKind.DELETE_POD, scope=Scope.NODE)
    assert refused() == {"delete_pod on nodes at low risk", "delete_pod on nodes at medium risk"}


class _Cluster:
    def __init__(self) -> None:
        self.reads: list[Operation] = []

    async def read(self, op: Operation) -> dict[str, Any]:
        self.reads.append(op)
        raise RuntimeError("read")

    async def pods(self, namespace: str) -> list[dict[str, Any]]:
        raise AssertionError("no pods are read without an owner")

    async def read_owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        raise AssertionError("no owner")


async def test_verification_looks_where_the_spec_says(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = _Cluster()
    service = VerificationService(
        cast(Database, None), cluster, deadline=timedelta(seconds=1), poll=timedelta(seconds=1)
    )
    restart, delete = (
        parse_operation(EXAMPLES[k])
        for k in (OperationKind.ROLLOUT_RESTART, OperationKind.DELETE_POD)
    )
    replaced = "the pod had no controller opsgate can watch; it is gone"
    assert (await service._look(delete, {})).message == replaced
    await service._look(restart, {})
    assert cluster.reads == [restart]
    _changed(monkeypatch, OperationKind.ROLLOUT_RESTART, verification=Check.REPLACEMENT)
    _changed(monkeypatch, OperationKind.DELETE_POD, verification=None)
    assert (await service._look(restart, {})).message == replaced
    assert (await service._look(delete, {})).state == rollout_status.FAILED
    assert cluster.reads == [restart]


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
