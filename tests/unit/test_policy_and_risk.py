from pathlib import Path

import pytest

from opsgate.services.operation_specs import effective_risk
from opsgate.services.operations import parse_operation
from opsgate.services.policy import Policy, PolicyError
from opsgate.services.risk import Risk
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
        ("users: [{id: 1, roles: [ghost]}]\n", "users.0.roles.0: undefined role 'ghost'"),
        ("roles: {a: {operations: [rm_rf]}}\n", "unknown operations"),
        ("quorum: {high: 0}\n", "at least 1"),
        ("roles: {a: {risk_levels: [extreme]}}\n", "roles.a.risk_levels.0"),
        ("bogus: 1\n", "bogus"),
        ("roles: [\n", "line 2: cannot parse YAML"),
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


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as raised:
        Policy.from_file(path)
    lines = raised.value.lines
    assert all(line.startswith(f"{path}: ") and ": :" not in line for line in lines), lines
    return [line.removeprefix(f"{path}: ") for line in lines]


def test_every_schema_error_is_reported_with_its_path(tmp_path: Path) -> None:
    text = "users: [{id: x, roles: []}]\nquorum: {extreme: 1}\nbogus: 1\n"
    assert _problems(tmp_path, text) == [
        "users.0.id: Input should be a valid integer, unable to parse string as an integer",
        "quorum.extreme: Input should be 'low', 'medium', 'high' or 'critical'",
        "bogus: Extra inputs are not permitted",
    ]
    assert _problems(tmp_path, "quorum: {high: 0}\n") == [
        "quorum: quorum for high must be at least 1"
    ]


def test_empty_and_unparsable_files(tmp_path: Path) -> None:
    assert _problems(tmp_path, "# nothing yet\n") == [
        "the file is empty; a policy needs roles and users"
    ]
    assert _problems(tmp_path, "roles: {}\n") == [
        "users: no users are defined, so nobody may approve anything"
    ]
    (line,) = _problems(tmp_path, "roles:\n  a: [\n")
    assert line.startswith("line 3: cannot parse YAML: ")


ADMINS = """
roles:
  admin: {namespaces: ["*"], operations: ["*"], risk_levels: [low, medium, high, critical]}
  ops: {namespaces: [shop], operations: [scale], risk_levels: [low, medium, high]}
users:
  - {id: 1, name: ann, roles: [admin]}
  - {id: 2, name: ben, roles: [admin, ops]}
"""


def test_duplicates_undefined_names_and_routes_to_nowhere(tmp_path: Path) -> None:
    text = ADMINS + (
        "  - {id: 1, name: again, roles: [ghost]}\n"
        "routes:\n"
        "  - {match: {a: b}, thread_id: 3, notifiers: [slack]}\n"
        "  - {match: {a: c}}\n"
        "result_notifiers: [audit]\n"
    )
    assert _problems(tmp_path, text) == [
        "users.2.id: 1 is already users.0",
        "users.2.roles.0: undefined role 'ghost'; defined: admin, ops",
        "routes.0.notifiers.0: undefined notifier 'slack'; none is defined",
        "routes.0.thread_id: a forum topic needs the route's chat_id",
        "routes.1: sends nowhere; set chat_id, subscribers or notifiers",
        "result_notifiers.0: undefined notifier 'audit'; none is defined",
    ]


def test_a_quorum_nobody_can_reach_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(ADMINS)
    Policy.from_file(path)  # two admins reach every default quorum
    assert _problems(tmp_path, ADMINS + "quorum: {high: 5}\n") == [
        "quorum.high: 5 approvals needed, but only 2 users (ann, ben) may approve "
        "rollout_restart, rollout_undo, scale, delete_pod in namespace * at high risk",
        "quorum.high: 5 approvals needed, but only 2 users (ann, ben) may approve "
        "rollout_restart, rollout_undo, scale, delete_pod in namespace shop at high risk",
        "quorum.high: 5 approvals needed, but only 2 users (ann, ben) may approve "
        "cordon, uncordon on nodes at high risk",
    ]
    one_admin = ADMINS.replace("roles: [admin, ops]", "roles: [ops]")
    problems = _problems(tmp_path, one_admin)
    # ben's role counts in shop for scale, not elsewhere and not at critical.
    assert "quorum.high: 2 approvals needed, but only 1 user (ann) may approve " in problems[0]
    assert not any("scale in namespace shop at high" in p for p in problems)
    assert any(
        p.startswith("quorum.critical: 2 approvals needed, but only 1 user (ann)")
        and "scale" in p
        and "namespace shop" in p
        for p in problems
    )
    # A role limited to a namespace never counts for nodes.
    nodes = "roles: {ops: {namespaces: [shop], operations: [cordon], risk_levels: [medium]}}\n"
    assert _problems(tmp_path, nodes + "users: [{id: 1, roles: [ops]}]\n") == [
        "quorum.medium: 1 approval needed, but no user may approve cordon on nodes at medium risk"
    ]


def test_who_may_approve_names_roles_and_their_users() -> None:
    restart = parse_operation("kubectl rollout restart deployment/checkout -n shop")
    assert policy().who_may_approve(restart, Risk.MEDIUM) == (
        ["admin", "oncall"],
        ["alice", "bob", "carol", "dave"],
    )
    assert policy().who_may_approve(restart, Risk.CRITICAL) == (["admin"], ["carol", "dave"])
