"""The policy holder, and the consumers that read the policy in force through it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from opsgate.services.approvals import lapse_reason
from opsgate.services.chat import ChatTarget
from opsgate.services.notifiers import PolicyNotifiers
from opsgate.services.operations import parse_operation
from opsgate.services.policy import Policy, PolicyError
from opsgate.services.policy_source import PolicySource
from opsgate.services.risk import Risk
from opsgate.services.routing import Router
from tests.builders import ALICE, BOB, VIEWER, policy

ROUTED = {"routes": [{"match": {"namespace": "pay"}, "chat_id": -2}]}
HOOKED = {"notifiers": {"hook": {"type": "webhook", "url": "http://x/y"}}}


def test_replace_puts_the_new_policy_in_force_and_returns_the_old() -> None:
    first, second = policy(), policy({"high": 1})
    source = PolicySource(first)
    assert source.current() is first and source.generation == 1
    assert source.replace(second) is first
    assert source.current() is second and source.generation == 2


def test_a_router_built_before_a_reload_routes_by_the_new_policy() -> None:
    source = PolicySource(policy())
    router = Router(source, ChatTarget(-1))
    assert router.route({"namespace": "pay"}).target == ChatTarget(-1)
    source.replace(policy(**ROUTED))
    assert router.route({"namespace": "pay"}).target == ChatTarget(-2)
    assert router.chats() == (-2,)


async def test_notifiers_are_looked_up_in_the_policy_in_force() -> None:
    source = PolicySource(policy())
    async with httpx.AsyncClient() as client:
        notifiers = PolicyNotifiers(source, client)
        assert notifiers.get("hook") is None
        source.replace(policy(**HOOKED))
        found = notifiers.get("hook")
        assert found is not None and found.name == "hook"


def test_why_a_signature_lapses() -> None:
    op = parse_operation("kubectl rollout restart deployment/checkout -n shop")
    current = policy()
    assert lapse_reason(current, BOB, op, Risk.MEDIUM) is None
    assert lapse_reason(current, 424242, op, Risk.MEDIUM) == "not in the policy any more"
    assert lapse_reason(current, VIEWER, op, Risk.MEDIUM) == (
        "not an approver for this action under the current policy"
    )
    assert lapse_reason(current, ALICE, op, Risk.CRITICAL) is not None


def test_a_policy_file_that_is_not_utf8_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"users: \xff\xfe\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        Policy.from_file(path)
