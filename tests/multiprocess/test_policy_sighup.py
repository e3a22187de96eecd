"""SIGHUP makes a running ``opsgate serve`` reload its policy file; a broken file is refused."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import yaml

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from tests.builders import ALICE, policy_document
from tests.e2e.rig import WEBHOOK_TOKEN
from tests.procs import OpsgateProcess, OpsgateProcesses, serve_env


async def policy_in_force(child: OpsgateProcess, generation: int) -> dict[str, Any]:
    """``GET /api/v1/policy`` once the child has had ``generation`` policies."""
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    async with httpx.AsyncClient(base_url=child.base_url, headers=headers, timeout=5) as client:
        for _ in range(200):
            shown: dict[str, Any] = (await client.get("/api/v1/policy")).json()
            if shown["generation"] >= generation:
                return shown
            await asyncio.sleep(0.05)
    raise AssertionError(f"policy generation {generation} never came: {child.describe()}")


async def test_sighup_reloads_the_policy_file_and_a_broken_one_keeps_the_old(
    procs: OpsgateProcesses,
    telegram: FakeTelegram,
    kube: FakeKube,
    database_url: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    document = policy_document()
    path.write_text(yaml.safe_dump(document))
    env = serve_env(telegram, kube, database_url, tmp_path / "serve", {"policy_file": path})
    child = await procs.serve(env)
    await child.wait_healthy()
    assert (await policy_in_force(child, 1))["users"] == 5

    document["users"] = [u for u in document["users"] if u["id"] != ALICE]
    path.write_text(yaml.safe_dump(document))
    child.process.send_signal(signal.SIGHUP)
    reloaded = await policy_in_force(child, 2)
    assert (reloaded["generation"], reloaded["users"]) == (2, 4)

    path.write_text("users: [\n")
    child.process.send_signal(signal.SIGHUP)
    for _ in range(200):
        if "policy_reload_refused" in child.stdout() + child.stderr():
            break
        await asyncio.sleep(0.05)
    shown = await policy_in_force(child, 2)
    assert (shown["generation"], shown["users"]) == (2, 4)
    assert child.returncode is None, child.describe()
    refused = [
        line
        for line in (child.stdout() + child.stderr()).splitlines()
        if "policy_reload_refused" in line
    ]
    assert len(refused) == 1 and "cannot parse YAML" in refused[0], refused

    # The process still reloads after a refusal.
    path.write_text(yaml.safe_dump(policy_document()))
    child.process.send_signal(signal.SIGHUP)
    assert (await policy_in_force(child, 3))["users"] == 5
