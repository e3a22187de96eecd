from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from tests.builders import policy
from tests.e2e.rig import CHAT_ID, Rig


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    fake.add_chat(CHAT_ID, type="supergroup", title="On-call", is_forum=True)
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    fake = FakeKube()
    await fake.start()
    fake.add_deployment("shop", "checkout", replicas=2, image="checkout:1")
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def rig_factory(
    telegram: FakeTelegram, kube: FakeKube, tmp_path: Path, database_url: str
) -> AsyncIterator[Rig]:
    """A rig the test starts itself (to change settings first); stopped and checked after."""
    rig = Rig(telegram, kube, policy(), tmp_path, database_url)
    try:
        yield rig
    finally:
        await rig.stop()
    # Every tap must get an answer, or the user's phone spins until Telegram gives up.
    assert telegram.unanswered_callback_queries() == []


@pytest.fixture
async def rig(rig_factory: Rig) -> Rig:
    await rig_factory.start()
    return rig_factory
