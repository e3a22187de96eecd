"""What ``opsgate serve`` keeps out of its process: Alembic (the migration runs in a child), the
MCP SDK (loaded on the first agent's request), PTB's use of cryptography and FastAPI's of
pydantic.v1 (unused_extras), the Kubernetes client (built on first use, kube_client; its
aiohttp is loaded anyway, for the bot's Bot API calls), and on SQLite the PostgreSQL dialect
(storage.db.dialect_insert). Each is one MB or several of resident memory.

Checked in a fresh interpreter: this test process has imported them all long before.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.builders import KUBECONFIG

REPO = Path(__file__).resolve().parents[2]

SERVE_START = """
import asyncio, sys
from opsgate.app import build_app, load_kube_client, migrate_database
import opsgate.cli
from opsgate.services.policy import Policy
from opsgate.services.policy_source import PolicySource
from opsgate.services.storage.schema_version import schema_is_current
from opsgate.settings import Settings

async def start() -> None:
    settings = Settings(
        telegram_token="1:x", alert_chat_id=-1, database_url=sys.argv[1], kubeconfig=sys.argv[2]
    )
    kube = await load_kube_client(settings)
    og = build_app(settings, policy=PolicySource(Policy.empty()), kube=kube)
    await migrate_database(og.db)
    print("schema:", "current" if await schema_is_current(og.db) else "behind")
    await og.db.dispose()
    await og.kube.close()

asyncio.run(start())
kept_out = (
    "alembic", "mako", "mcp", "mcp_types", "cryptography",
    "kubernetes_asyncio.config", "kubernetes_asyncio.client.api_client",
    "sqlalchemy.dialects.postgresql", "pydantic.v1",
)
print("loaded:", *sorted(m for m in kept_out if m in sys.modules))
"""


def test_serve_starts_without_alembic_mcp_or_the_kubernetes_client(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    done = subprocess.run(
        [sys.executable, "-c", SERVE_START, url, str(kubeconfig)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    said = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    assert said.get("schema", "").split() == ["current"], done.stdout + done.stderr
    assert said["loaded"].split() == [], f"loaded in the serving process: {said['loaded']}"


def test_pydantic_v1_is_still_there_for_other_importers() -> None:
    code = (
        "import sys, opsgate.cli\n"
        "from fastapi._compat.shared import is_pydantic_v1_model_class\n"
        "print(is_pydantic_v1_model_class(int), 'pydantic.v1' in sys.modules)\n"
        "from pydantic import v1\n"
        "print(is_pydantic_v1_model_class(type('M', (v1.BaseModel,), {})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "False", "True"]


def test_the_mcp_sdk_still_gets_cryptography_after_telegram() -> None:
    code = (
        "import sys, opsgate.cli, telegram._passport.credentials as passport\n"
        "import mcp.server.request_state\n"
        "print(passport.CRYPTO_INSTALLED, 'cryptography' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "True"]
