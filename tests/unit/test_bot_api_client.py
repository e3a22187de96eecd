"""The HTTP client under every Bot API call does no import work per request.

httpcore asks for sniffio each time it sets up a lock or an event; without sniffio installed
that is a failed import, which walks sys.path on every call (about 1 ms of CPU per Bot API
call, the largest single cost of answering a tap).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

from telegram.request import HTTPXRequest

from opsgate.sandbox.telegram_api import FakeTelegram


class _Lookups:
    """A finder that finds nothing and remembers what was looked for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.names.append(name)
        return None


async def test_bot_api_calls_look_up_no_module() -> None:
    telegram = FakeTelegram()
    await telegram.start()
    request = HTTPXRequest()
    await request.initialize()
    url = f"{telegram.root_url}/bot{telegram.token}/getMe"
    lookups = _Lookups()
    try:
        # The first call may import what httpx loads lazily; the ones after it must not.
        await request.post(url)
        sys.meta_path.insert(0, lookups)
        try:
            for _ in range(5):
                assert await request.post(url)
        finally:
            sys.meta_path.remove(lookups)
    finally:
        await request.shutdown()
        await telegram.stop()
    assert lookups.names == []
