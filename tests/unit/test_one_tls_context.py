"""serve's HTTPS clients (PTB's two and the notifiers') share one TLS context: each context of
its own would load the CA bundle again."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from opsgate.app import build_app, load_kube_client
from opsgate.services.policy import Policy
from opsgate.services.policy_source import PolicySource
from opsgate.settings import Settings
from tests.builders import KUBECONFIG


async def test_build_app_makes_one_tls_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(create(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    settings = Settings(
        telegram_token="1:x",  # type: ignore[arg-type]
        alert_chat_id=-1,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}",
        kubeconfig=str(kubeconfig),
    )
    og = build_app(
        settings, policy=PolicySource(Policy.empty()), kube=await load_kube_client(settings)
    )
    try:
        assert len(made) == 1
    finally:
        await og.http.aclose()
        await og.db.dispose()
