"""``opsgate serve`` leaves what start-up built out of the garbage collections that follow."""

from __future__ import annotations

import gc

import pytest

from opsgate import serve as serve_module
from opsgate.settings import Settings


class _Runtime:
    """What ``serve`` runs, recording how much of the heap was frozen by the time it ran."""

    def __init__(self) -> None:
        self.frozen_when_run: int | None = None

    async def run(self) -> None:
        self.frozen_when_run = gc.get_freeze_count()


async def test_serve_freezes_the_startup_heap_before_the_runtime_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _Runtime()

    async def build_runtime(_settings: Settings) -> _Runtime:
        return runtime

    monkeypatch.setattr(serve_module, "build_runtime", build_runtime)
    monkeypatch.setattr(serve_module, "handle_signals", lambda _runtime: None)
    assert gc.get_freeze_count() == 0
    try:
        await serve_module.serve(Settings(telegram_token="1:x", alert_chat_id=-1))
    finally:
        gc.unfreeze()
    assert runtime.frozen_when_run is not None
    # This test process's own heap: far more than a handful of objects.
    assert runtime.frozen_when_run > 10_000
