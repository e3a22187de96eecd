import pytest

from opsgate.services.operations import (
    Operation,
    OperationKind,
    OperationRefused,
    parse_operation,
)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            "kubectl rollout restart deployment/checkout -n shop",
            Operation(OperationKind.ROLLOUT_RESTART, "deployment", "checkout", "shop"),
        ),
        (
            "rollout restart deploy checkout --namespace=shop",
            Operation(OperationKind.ROLLOUT_RESTART, "deployment", "checkout", "shop"),
        ),
        (
            "kubectl rollout undo sts/db --namespace data",
            Operation(OperationKind.ROLLOUT_UNDO, "statefulset", "db", "data"),
        ),
        (
            "kubectl rollout restart daemonset/node-exporter -nmonitoring",
            Operation(OperationKind.ROLLOUT_RESTART, "daemonset", "node-exporter", "monitoring"),
        ),
        (
            "kubectl scale deployment/checkout --replicas=5 -n shop",
            Operation(OperationKind.SCALE, "deployment", "checkout", "shop", 5),
        ),
        (
            "scale statefulset db --replicas 0",
            Operation(OperationKind.SCALE, "statefulset", "db", "default", 0),
        ),
        (
            "kubectl delete pod/checkout-7d9f-abcde -n shop",
            Operation(OperationKind.DELETE_POD, "pod", "checkout-7d9f-abcde", "shop"),
        ),
        ("kubectl cordon node-1", Operation(OperationKind.CORDON, "node", "node-1")),
        (
            "uncordon node/node-1.example",
            Operation(OperationKind.UNCORDON, "node", "node-1.example"),
        ),
    ],
)
def test_allowed_actions_parse(action: str, expected: Operation) -> None:
    assert parse_operation(action) == expected


def test_namespace_defaults_to_the_alerts_namespace() -> None:
    op = parse_operation("kubectl rollout restart deployment/checkout", default_namespace="shop")
    assert op.namespace == "shop"


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("", "empty"),
        ("kubectl", "empty"),
        ("kubectl delete deployment/checkout -n shop", "only pods may be deleted"),
        ("kubectl exec -it pod/x -- sh", "not allowed"),
        ("kubectl rollout status deployment/x", "only 'rollout restart' and 'rollout undo'"),
        ("kubectl rollout restart service/x", "not 'service'"),
        ("kubectl scale deployment/x", "needs --replicas"),
        ("kubectl scale daemonset/x --replicas=2", "not 'daemonset'"),
        ("kubectl scale deployment/x --replicas=-1", "whole number"),
        ("kubectl scale deployment/x --replicas=two", "whole number"),
        ("kubectl scale deployment/x --replicas=100000", "above the limit"),
        ("kubectl rollout restart deployment/x --replicas=2", "only goes with scale"),
        ("kubectl rollout restart deployment/Bad_Name", "not a valid resource name"),
        ("kubectl rollout restart deployment/x -n 'a b'", "not a valid namespace"),
        ("kubectl rollout restart deployment/x; rm -rf /", "not allowed|not a valid"),
        ("kubectl rollout restart deployment/x --force", "the flag --force"),
        ("kubectl cordon node-1 -n shop", "nodes have no namespace"),
        ("kubectl rollout restart deployment/a deployment/b", "exactly one target"),
        ("kubectl rollout restart 'unterminated", "cannot read"),
    ],
)
def test_everything_else_is_refused_with_a_reason(action: str, reason: str) -> None:
    with pytest.raises(OperationRefused, match=reason):
        parse_operation(action)


def test_a_parse_kept_for_an_action_is_per_default_namespace_and_refusals_repeat() -> None:
    action = "kubectl rollout restart deployment/checkout"
    first = parse_operation(action, default_namespace="shop")
    assert parse_operation(action, default_namespace="shop") == first
    # The same words in another alert's namespace: that namespace, not the kept parse's.
    assert parse_operation(action, default_namespace="billing").namespace == "billing"
    assert parse_operation(action, default_namespace="shop").namespace == "shop"
    for _ in range(2):
        with pytest.raises(OperationRefused, match="not an allowed operation"):
            parse_operation("kubectl exec pod/x -n shop")


def test_describe_round_trips_through_the_parser() -> None:
    for action in (
        "kubectl rollout restart deployment/checkout -n shop",
        "kubectl rollout undo daemonset/agent -n kube-system",
        "kubectl scale statefulset/db -n data --replicas=3",
        "kubectl delete pod/x -n shop",
        "kubectl cordon n1",
    ):
        op = parse_operation(action)
        assert parse_operation(op.describe()) == op
        assert Operation.from_dict(op.to_dict()) == op
