"""The /whoami policy line pastes into the policy file as it is and the policy still loads."""

from __future__ import annotations

import html
import re
from pathlib import Path

import yaml

from opsgate.bot.render_commands import whoami_html
from opsgate.services.policy import Policy
from tests.builders import ALICE, MALLORY, policy, policy_document

ENTRY = re.compile(r"Policy entry \(under <code>users:</code>\): <code>(.*?)</code>")


def pasted(tmp_path: Path, line: str) -> Policy:
    # safe_dump sorts keys, so ``users:`` is the file's last list and a line at the end joins it.
    text = yaml.safe_dump(policy_document()) + line + "\n"
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return Policy.from_file(path)


def entry_of(user_id: int, username: str | None) -> str:
    current = policy()
    answer = whoami_html(
        user_id,
        username,
        current.roles_of(user_id),
        entry_roles=current.entry_roles(user_id),
    )
    found = ENTRY.search(answer)
    assert found, answer
    return html.unescape(found.group(1))


def test_a_stranger_gets_the_role_that_allows_least(tmp_path: Path) -> None:
    line = entry_of(MALLORY, 'mal"lo: ry')
    loaded = pasted(tmp_path, line)
    assert loaded.roles_of(MALLORY) == ["viewer"]
    assert not loaded.can_approve(MALLORY)


def test_a_member_gets_their_own_roles(tmp_path: Path) -> None:
    line = entry_of(ALICE, "alice")
    assert '"oncall"' in line
    fresh = policy_document()
    fresh["users"] = [u for u in fresh["users"] if u["id"] != ALICE]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(fresh) + line + "\n", encoding="utf-8")
    assert Policy.from_file(path).roles_of(ALICE) == ["oncall"]


def test_a_policy_without_roles_suggests_none() -> None:
    assert Policy.empty().entry_roles(MALLORY) == []
