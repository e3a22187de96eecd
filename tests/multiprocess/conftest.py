from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from tests.e2e.rig import CHAT_ID
from tests.procs import OpsgateProcesses


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[OpsgateProcesses]:
    group = OpsgateProcesses(tmp_path)
    try:
        yield group
    finally:
        await group.close()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        fake.add_chat(CHAT_ID, type="supergroup", title="On-call", is_forum=True)
        yield fake


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube() as fake:
        fake.add_deployment("shop", "checkout", replicas=2, image="checkout:1")
        yield fake
