"""Property tests for the operation allowlist: whatever text comes in, the parser either refuses
it with OperationRefused or yields an operation whose canonical form parses back to itself; and
every operation it can describe, it reads back unchanged."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from opsgate.services.operations import (
    MAX_REPLICAS,
    SCALABLE,
    Operation,
    OperationKind,
    OperationRefused,
    parse_operation,
)

LABEL = r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?"
names = st.from_regex(rf"{LABEL}(\.{LABEL}){{0,2}}", fullmatch=True)
namespaces = st.from_regex(LABEL, fullmatch=True)
WORKLOADS = ("deployment", "statefulset", "daemonset")


@st.composite
def operations(draw: st.DrawFn) -> Operation:
    kind = draw(st.sampled_from(OperationKind))
    name = draw(names)
    match kind:
        case OperationKind.CORDON | OperationKind.UNCORDON:
            return Operation(kind, "node", name)
        case OperationKind.DELETE_POD:
            return Operation(kind, "pod", name, draw(namespaces))
        case OperationKind.SCALE:
            target = draw(st.sampled_from(sorted(SCALABLE)))
            replicas = draw(st.integers(0, MAX_REPLICAS))
            return Operation(kind, target, name, draw(namespaces), replicas)
        case _:
            return Operation(kind, draw(st.sampled_from(WORKLOADS)), name, draw(namespaces))


VALID = [
    "kubectl rollout restart deployment/checkout -n shop",
    "rollout undo sts db --namespace=data",
    "kubectl scale deploy/api --replicas=3 -nshop",
    "kubectl delete pod/web-1 -n shop",
    "kubectl cordon node-1",
    "uncordon node/node-2",
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid action with a few characters replaced, inserted or removed."""
    text = list(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        match draw(st.sampled_from(("replace", "insert", "delete"))):
            case "replace" if at < len(text):
                text[at] = draw(st.characters())
            case "insert":
                text.insert(at, draw(st.characters()))
            case "delete" if at < len(text):
                del text[at]
    return "".join(text)


def accepted_is_canonical(action: str) -> None:
    try:
        op = parse_operation(action)
    except OperationRefused:
        return
    assert parse_operation(op.describe()) == op, (action, op)


@settings(max_examples=200, deadline=None)
@given(operations())
def test_every_operation_reads_back_from_its_description(op: Operation) -> None:
    assert parse_operation(op.describe()) == op


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
@example("kubectl scale deploy/api --replicas=²")
@example("kubectl cordon 'node-1\n'")
@example("kubectl rollout restart deployment/checkout -n 'shop\n'")
def test_any_text_is_refused_or_parsed_to_its_canonical_form(action: str) -> None:
    accepted_is_canonical(action)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_actions_are_refused_or_parsed_to_their_canonical_form(action: str) -> None:
    accepted_is_canonical(action)
