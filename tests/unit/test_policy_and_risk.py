from pathlib import Path

import pytest

from opsgate.services.operations import parse_operation
from opsgate.services.policy import Policy, PolicyError
from opsgate.services.risk import Risk, effective_risk
from tests.builders import ALICE, CAROL, MALLORY, VIEWER, policy


def test_roles_allow_namespaces_operations_and_risk() -> None:
    p = policy()
    restart = parse_operation("rollout restart deployment/checkout -n shop")
    elsewhere = parse_operation("rollout restart deployment/api -n payments")
    cordon = parse_operation("cordon node-1")
    assert p.authorize(ALICE, restart, Risk.MEDIUM).allowed
    assert not p.authorize(ALICE, restart, Risk.CRITICAL).allowed
    assert not p.authorize(ALICE, elsewhere, Risk.MEDIUM).allowed
    assert not p.authorize(ALICE, cordon, Risk.MEDIUM).allowed
    assert p.authorize(CAROL, cordon, Risk.CRITICAL).allowed
    refused = p.authorize(MALLORY, restart, Risk.LOW)
    assert not refused.allowed and str(MALLORY) in refused.reason
    assert not p.authorize(VIEWER, restart, Risk.LOW).allowed


def test_quorum_defaults_and_overrides() -> None:
    assert policy().quorum(Risk.HIGH) == 2
    assert policy({"medium": 3}).quorum(Risk.MEDIUM) == 3
    assert policy({"medium": 3}).quorum(Risk.LOW) == 1


def test_declared_risk_can_raise_but_not_lower() -> None:
    undo = parse_operation("rollout undo deployment/x -n shop")
    assert effective_risk(undo, Risk.LOW) is Risk.HIGH
    assert effective_risk(undo, Risk.CRITICAL) is Risk.CRITICAL
    assert effective_risk(undo, None) is Risk.HIGH


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("users: [{id: 1, roles: [ghost]}]\n", "undefined roles"),
        ("roles: {a: {operations: [rm_rf]}}\n", "unknown operations"),
        ("quorum: {high: 0}\n", "at least 1"),
        ("roles: {a: {risk_levels: [extreme]}}\n", "roles.a.risk_levels.0"),
        ("bogus: 1\n", "bogus"),
        ("roles: [\n", "cannot read"),
    ],
)
def test_bad_policy_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        Policy.from_file(path)


def test_example_policy_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "policy.example.yaml"
    Policy.from_file(example)
