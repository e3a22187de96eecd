"""``opsgate migrate`` on a database it cannot use: one line naming the setting, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.cli import main
from tests.conftest import PG_URL
from tests.procs import free_port


def migrate_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> str:
    monkeypatch.setenv("OPSGATE_DATABASE_URL", url)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("opsgate: OPSGATE_DATABASE_URL") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "is invalid: Could not parse"),
        ("sqlite:///opsgate.db", "is invalid: The asyncio extension requires an async driver"),
        ("sqlite+aiosqlite:///{tmp}/missing/opsgate.db", "cannot use the database: [Errno 2]"),
    ],
)
def test_unusable_url_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    expected: str,
) -> None:
    assert expected in migrate_error(monkeypatch, capsys, url.format(tmp=tmp_path))


def test_unreachable_server_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/opsgate"
    assert "Connect call failed" in migrate_error(monkeypatch, capsys, url)


@pytest.mark.postgres
def test_missing_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = PG_URL.rsplit("/", 1)[0] + "/opsgate_no_such_database"
    err = migrate_error(monkeypatch, capsys, url)
    assert 'database "opsgate_no_such_database" does not exist' in err
