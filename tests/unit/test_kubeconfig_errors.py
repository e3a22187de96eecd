"""Kubeconfig problems stop opsgate with one line that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.app import load_kube_client
from opsgate.settings import Settings, SettingsError
from tests.builders import KUBECONFIG

GOOD = KUBECONFIG


async def _error(path: Path, context: str | None = None) -> str:
    settings = Settings(
        telegram_token="1:x",  # type: ignore[arg-type]
        alert_chat_id=-1,
        kubeconfig=str(path),
        kube_context=context,
    )
    with pytest.raises(SettingsError) as raised:
        await load_kube_client(settings)
    message = str(raised.value)
    assert "\n" not in message
    return message


async def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    assert await _error(path) == (
        f"no Kubernetes access: OPSGATE_KUBECONFIG={path}: the file does not exist"
    )


async def test_a_malformed_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(GOOD.replace("kind: Config", "kind: [Config"))
    message = await _error(path)
    assert message.startswith(f"no Kubernetes access: OPSGATE_KUBECONFIG={path}: line 3: ")
    assert "not valid YAML" in message


async def test_no_current_context_or_an_unknown_one(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(GOOD.replace("current-context: here\n", ""))
    assert "no current-context is set" in await _error(path)
    assert "context 'there' is not defined (contexts: here)" in await _error(path, "there")
    path.write_text(GOOD)
    settings = Settings(telegram_token="1:x", alert_chat_id=-1, kubeconfig=str(path))  # type: ignore[arg-type]
    client = await load_kube_client(settings)
    await client.close()


async def test_what_only_the_library_refuses_is_said_on_first_use(tmp_path: Path) -> None:
    # Start-up checks the file itself; the client, and the certificates it names, load when
    # opsgate first talks to the cluster (kube_client).
    path = tmp_path / "kubeconfig"
    missing = tmp_path / "cert.pem"
    user = f"{{client-certificate: {missing}, client-key: {missing}}}"
    path.write_text(GOOD.replace("http://", "https://").replace("{token: t}", user))
    settings = Settings(telegram_token="1:x", alert_chat_id=-1, kubeconfig=str(path))  # type: ignore[arg-type]
    kube = await load_kube_client(settings)
    with pytest.raises(SettingsError) as raised:
        await kube.api()
    assert str(raised.value) == (
        f"no Kubernetes access: OPSGATE_KUBECONFIG={path}: File does not exists: {missing}"
    )
    path.write_text(GOOD)
    await kube.api()  # a refusal is not kept: the next use loads again
    await kube.close()
