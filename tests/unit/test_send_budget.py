"""Telegram's flood limits as opsgate sizes them, and how a budget hands out sends."""

from __future__ import annotations

import socket

import pytest
from structlog.testing import capture_logs

from opsgate.bot.send_budget import FloodLimits, Rate, SendBudget, redis_storage
from opsgate.settings import Settings, SettingsError, load_settings

TOKEN = "123456:TEST-TOKEN"
GROUP = -1001234567890
PRIVATE = 4242


def test_the_defaults_are_telegrams_limits() -> None:
    settings = Settings(telegram_token=TOKEN, alert_chat_id=GROUP)  # type: ignore[arg-type]
    limits = FloodLimits.telegram(
        chat_per_second=settings.telegram_chat_rate_per_second,
        group_per_minute=settings.telegram_group_rate_per_minute,
        overall_per_second=settings.telegram_overall_rate_per_second,
    )
    # One a second in a chat with a short burst, 20 a minute in a group, 30 a second in all.
    assert limits == FloodLimits(per_chat=Rate(3, 3), per_group=Rate(20, 60), overall=Rate(30, 1))
    assert settings.redis_url is None


def test_redis_must_be_a_redis_url() -> None:
    with pytest.raises(SettingsError, match="OPSGATE_REDIS_URL is invalid"):
        load_settings(telegram_token=TOKEN, alert_chat_id=GROUP, redis_url="http://cache:6379")
    settings = load_settings(
        telegram_token=TOKEN, alert_chat_id=GROUP, redis_url="redis://cache:6379/0"
    )
    assert settings.redis_url == "redis://cache:6379/0"


async def test_a_chat_gets_its_burst_then_waits_for_its_window() -> None:
    budget = SendBudget(FloodLimits(Rate(2, 5), Rate(100, 60), Rate(100, 1)))
    assert [await budget.reserve(PRIVATE) for _ in range(2)] == [0, 0]
    wait = await budget.reserve(PRIVATE)
    assert 4 < wait <= 5.5
    # Another chat has a budget of its own.
    assert await budget.reserve(PRIVATE + 1) == 0


async def test_only_groups_count_against_the_group_budget() -> None:
    budget = SendBudget(FloodLimits(Rate(100, 1), Rate(1, 60), Rate(100, 1)))
    assert await budget.reserve(GROUP) == 0
    assert await budget.reserve(GROUP) > 50
    assert [await budget.reserve(PRIVATE) for _ in range(3)] == [0, 0, 0]


async def test_the_overall_budget_spans_chats() -> None:
    budget = SendBudget(FloodLimits(Rate(100, 1), Rate(100, 60), Rate(2, 1)))
    assert [await budget.reserve(chat) for chat in (PRIVATE, GROUP)] == [0, 0]
    assert await budget.reserve(PRIVATE + 1) > 0


async def test_an_unreachable_redis_falls_back_to_a_budget_of_its_own() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limits = FloodLimits(Rate(1, 60), Rate(100, 60), Rate(100, 1))
    budget = SendBudget(limits, storage=redis_storage(f"redis://127.0.0.1:{port}/0"))
    with capture_logs() as logs:
        assert await budget.reserve(PRIVATE) == 0
        assert await budget.reserve(PRIVATE) > 0
    warnings = [e for e in logs if e["event"] == "send_budget_storage_unavailable"]
    assert len(warnings) == 1
