"""Several opsgate processes on one database: one per instance id, one polling Telegram."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

import pytest

from opsgate.settings import SettingsError
from tests.builders import ALICE
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_commands import ask

HELD_LINE = "OPSGATE_INSTANCE_ID={} is held by another running opsgate; give each replica its own"


def replica(rig: Rig, instance_id: str) -> Rig:
    """Another process's runtime on the same database, Telegram and cluster."""
    return Rig(
        rig.telegram,
        rig.kube,
        rig.policy,
        rig.tmp_path,
        rig.database_url,
        {**rig.overrides, "instance_id": instance_id},
    )


def serve_env(rig: Rig, instance_id: str) -> dict[str, str]:
    settings = rig.settings()
    assert settings.kubeconfig is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPSGATE_")}
    env.update(
        OPSGATE_TELEGRAM_TOKEN=settings.telegram_token.get_secret_value(),
        OPSGATE_ALERT_CHAT_ID=str(settings.alert_chat_id),
        OPSGATE_DATABASE_URL=settings.database_url,
        OPSGATE_HTTP_PORT="0",
        OPSGATE_TELEGRAM_API_URL=settings.telegram_api_url,
        OPSGATE_KUBECONFIG=settings.kubeconfig,
        OPSGATE_INSTANCE_ID=instance_id,
        OPSGATE_LOG_FORMAT="json",
    )
    return env


@asynccontextmanager
async def serve(
    rig: Rig, instance_id: str, log_file: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``opsgate serve`` as a real process; killed on the way out if still running."""
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opsgate.cli",
            "serve",
            env=serve_env(rig, instance_id),
            stdout=log,
            stderr=log,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


def polling(rig: Rig) -> bool:
    assert rig.runtime is not None
    updater = rig.runtime.og.telegram.updater
    assert updater is not None and rig.runtime.polling is not None
    return updater.running and rig.runtime.polling.is_leader


def polling_conflicts(rig: Rig) -> list[str]:
    return [
        str(call)
        for call in rig.telegram.calls
        if call.method == "getUpdates" and call.status == HTTPStatus.CONFLICT
    ]


async def test_a_second_runtime_under_a_live_instance_id_stops(rig_factory: Rig) -> None:
    rig_factory.overrides["instance_id"] = "replica-a"
    await rig_factory.start()
    twin = replica(rig_factory, "replica-a")
    with pytest.raises(SettingsError) as refused:
        await twin.start()
    assert str(refused.value) == HELD_LINE.format("replica-a")

    # The first is unharmed; once it has stopped, a restart under its id starts at once.
    answer = await ask(rig_factory, CHAT_ID, ALICE, "alice", "/whoami")
    assert "roles: oncall" in answer.plain_text
    await rig_factory.stop()
    restarted = replica(rig_factory, "replica-a")
    try:
        await restarted.start()
    finally:
        await restarted.stop()


async def test_opsgate_serve_under_a_live_instance_id_exits_with_one_line(
    rig_factory: Rig, tmp_path: Path
) -> None:
    rig_factory.overrides["instance_id"] = "replica-a"
    await rig_factory.start()
    log_file = tmp_path / "twin.log"
    async with serve(rig_factory, "replica-a", log_file) as twin:
        assert await asyncio.wait_for(twin.wait(), 60) == 2
    last_line = log_file.read_text().strip().splitlines()[-1]
    assert last_line == "opsgate: " + HELD_LINE.format("replica-a")


async def test_only_the_leader_polls_and_the_other_takes_over(rig_factory: Rig) -> None:
    rig_factory.overrides["instance_id"] = "replica-a"
    await rig_factory.start()
    await rig_factory.eventually(lambda: polling(rig_factory), timeout=20)
    other = replica(rig_factory, "replica-b")
    try:
        await other.start()
        # The newcomer has had its first try at the lock, and others after it, and lost them.
        for _ in range(20):
            await asyncio.sleep(0.05)
            assert polling(rig_factory) and not polling(other)
        answer = await ask(rig_factory, CHAT_ID, ALICE, "alice", "/whoami")
        assert "roles: oncall" in answer.plain_text
        # Two pollers would show up as getUpdates answered 409, as Telegram does.
        assert polling_conflicts(rig_factory) == []

        await rig_factory.stop()
        await other.eventually(lambda: polling(other), timeout=20)
        answer = await ask(other, CHAT_ID, ALICE, "alice", "/help")
        assert "/pending" in answer.plain_text
    finally:
        await other.stop()


async def test_a_killed_leader_is_replaced(rig_factory: Rig, tmp_path: Path) -> None:
    telegram = rig_factory.telegram
    async with serve(rig_factory, "replica-a", tmp_path / "replica-a.log") as leader:
        await rig_factory.eventually(
            lambda: any(call.method == "getUpdates" for call in telegram.calls), timeout=60
        )
        rig_factory.overrides["instance_id"] = "replica-b"
        await rig_factory.start()
        for _ in range(20):
            await asyncio.sleep(0.05)
            assert not polling(rig_factory)
        assert polling_conflicts(rig_factory) == []

        os.kill(leader.pid, signal.SIGKILL)
        await leader.wait()
        await rig_factory.eventually(lambda: polling(rig_factory), timeout=20)
        answer = await ask(rig_factory, CHAT_ID, ALICE, "alice", "/whoami")
        assert "roles: oncall" in answer.plain_text

    # The killed process's id is free at once: its restart starts, and waits its turn to poll.
    restarted = replica(rig_factory, "replica-a")
    try:
        await restarted.start()
        for _ in range(20):
            await asyncio.sleep(0.05)
            assert polling(rig_factory) and not polling(restarted)
    finally:
        await restarted.stop()
