import ast
import subprocess
import sys
from pathlib import Path

import pytest

from opsgate.cli import main

PACKAGE = Path(__file__).resolve().parents[2] / "opsgate"


def test_missing_settings_stop_serve_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPSGATE_TELEGRAM_TOKEN", raising=False)
    monkeypatch.setenv("OPSGATE_ALERT_CHAT_ID", "-100")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == "opsgate: OPSGATE_TELEGRAM_TOKEN is required but not set\n"


def test_bad_policy_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("users: [{id: x, roles: []}]\n")
    assert main(["check-policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("opsgate: ") and err.count("\n") == 1 and "users.0.id" in err


def test_check_policy_reports_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        "roles: {a: {namespaces: ['*'], operations: ['*'], risk_levels: [high]}}\n"
        "users: [{id: 1, roles: [a]}, {id: 1, roles: [a]}]\nquorum: {high: 5}\n"
    )
    assert main(["check-policy", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"opsgate: {bad}: users.1.id: 1 is already users.0"
    assert len(lines) == 3 and all(
        line.startswith(f"opsgate: {bad}: quorum.high: 5 approvals needed") for line in lines[1:]
    )
    good = Path(__file__).resolve().parents[2] / "deploy" / "policy.example.yaml"
    assert main(["check-policy", str(good)]) == 0


def test_unreachable_kubernetes_is_one_line(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OPSGATE_TELEGRAM_TOKEN": "123:abc",
        "OPSGATE_ALERT_CHAT_ID": "-100",
        "OPSGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "KUBECONFIG": str(tmp_path / "missing-kubeconfig"),
        "OPSGATE_LOG_LEVEL": "error",
    }
    done = subprocess.run(
        [sys.executable, "-m", "opsgate.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("opsgate: no Kubernetes access")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_services_never_import_bot_or_handlers() -> None:
    for path in (PACKAGE / "services").rglob("*.py"):
        for module in _imports(path):
            assert not module.startswith(("opsgate.bot", "opsgate.handlers")), (path, module)
            assert not module.startswith("telegram"), (path, module)


def test_bot_never_imports_handlers() -> None:
    for path in (PACKAGE / "bot").rglob("*.py"):
        assert not any(m.startswith("opsgate.handlers") for m in _imports(path)), path
