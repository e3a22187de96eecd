"""Every row lock the package takes is FOR NO KEY UPDATE (docs/architecture.md, "Row locks"):
a plain FOR UPDATE also shuts out the share lock a referencing insert takes, and two writers
then wait for each other. The races themselves are in tests/integration/test_lock_order.py;
this finds a new lock written the other way before a race does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

import opsgate
from opsgate.services.storage.models import Incident

PACKAGE = Path(opsgate.__file__).parent


def _is_key_share(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Dict):
        return any(
            isinstance(k, ast.Constant) and k.value == "key_share" and _true(v)
            for k, v in zip(node.keys, node.values, strict=True)
        )
    return False


def _true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _plain_locks(path: Path) -> list[int]:
    """Lines of ``path`` that lock a row without ``key_share``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        locks = isinstance(node.func, ast.Attribute) and node.func.attr == "with_for_update"
        if locks and not any(k.arg == "key_share" and _true(k.value) for k in node.keywords):
            lines.append(node.lineno)
        for keyword in node.keywords:
            if keyword.arg == "with_for_update" and not _is_key_share(keyword.value):
                lines.append(node.lineno)
    return lines


def test_no_plain_for_update_in_the_package() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := _plain_locks(path))
    }
    assert found == {}


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("select(x).with_for_update()", True),
        ("select(x).with_for_update(skip_locked=True)", True),
        ("select(x).with_for_update(key_share=True)", False),
        ("session.get(X, 1, with_for_update=True)", True),
        ("session.get(X, 1, with_for_update={'key_share': True})", False),
    ],
)
def test_the_check_sees_both_spellings(tmp_path: Path, source: str, plain: bool) -> None:
    path = tmp_path / "locks.py"
    path.write_text(source + "\n")
    assert bool(_plain_locks(path)) is plain


def test_key_share_is_for_no_key_update_on_postgresql() -> None:
    statement = select(Incident.id).with_for_update(key_share=True)
    assert "FOR NO KEY UPDATE" in str(statement.compile(dialect=postgresql.dialect()))
