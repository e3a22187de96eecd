"""Telegram's flood limits as budgets: per chat, per group chat and for the whole bot.

Each budget is a ``limits`` moving window: no stretch of the window's length ever holds more
sends than its amount, so the budget stays inside Telegram's limits however Telegram counts
them (a token bucket or a fixed window of the same size allow at least as much). The windows
live in memory, or in Redis so that every replica spends from the one budget a bot token has.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

log = structlog.get_logger(__name__)

# Telegram allows short bursts above one message a second in a chat; three seconds' worth.
CHAT_BURST_SECONDS = 3
# A send that waited for a window to free reaches Telegram a moment after the window opened
# here, but the send that freed it was stamped here before it travelled: without a margin the
# two would be nearer each other at Telegram than the window allows.
WINDOW_MARGIN_SECONDS = 0.2
# Another replica took the last send of a window between our look and our take.
RACE_RETRY_SECONDS = 0.05
REDIS_TIMEOUT_SECONDS = 2.0
NAMESPACE = "opsgate-telegram"


@dataclass(frozen=True)
class Rate:
    """``amount`` sends in any ``seconds``."""

    amount: int
    seconds: int


@dataclass(frozen=True)
class FloodLimits:
    per_chat: Rate
    per_group: Rate  # group and supergroup chats (negative ids), on top of per_chat
    overall: Rate

    @classmethod
    def telegram(
        cls,
        *,
        chat_per_second: int = 1,
        group_per_minute: int = 20,
        overall_per_second: int = 30,
    ) -> FloodLimits:
        """Telegram's published limits: 1 message a second in a chat, 20 a minute in a group,
        30 a second overall."""
        return cls(
            per_chat=Rate(chat_per_second * CHAT_BURST_SECONDS, CHAT_BURST_SECONDS),
            per_group=Rate(group_per_minute, 60),
            overall=Rate(overall_per_second, 1),
        )


def redis_storage(url: str) -> Storage:
    """``limits``' Redis storage for a ``redis://`` URL; it connects on first use."""
    return RedisStorage(
        f"async+{url}",
        wrap_exceptions=True,
        stream_timeout=REDIS_TIMEOUT_SECONDS,
        connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


class SendBudget:
    """Takes one send from every budget a chat counts against, all or (barring a race with
    another replica) none."""

    def __init__(
        self, limits: FloodLimits, *, storage: Storage | None = None, scope: str = "bot"
    ) -> None:
        """``scope`` names the budget in shared storage: the bot's id, since the limits are per
        bot token."""
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())
        # While shared storage is unreachable each replica keeps its own budget: more 429s
        # from Telegram (which pause only their chat) rather than no messages at all.
        self._fallback = MovingWindowRateLimiter(MemoryStorage())
        self._degraded = False
        self._scope = scope
        self._per_chat = _item(limits.per_chat, "chat")
        self._per_group = _item(limits.per_group, "group")
        self._overall = _item(limits.overall, "overall")
        # Within this process, looking and taking are one step.
        self._lock = asyncio.Lock()

    async def reserve(self, chat_id: int) -> float:
        """0 once a send to ``chat_id`` is taken from its budgets; else how many seconds to
        wait before asking again."""
        budgets = [(self._per_chat, str(chat_id)), (self._overall, "")]
        if chat_id < 0:
            budgets.insert(1, (self._per_group, str(chat_id)))
        async with self._lock:
            try:
                wait = await self._take(self._limiter, budgets)
            except StorageError as exc:
                if not self._degraded:
                    log.warning("send_budget_storage_unavailable", error=str(exc.storage_error))
                    self._degraded = True
                return await self._take(self._fallback, budgets)
            if self._degraded:
                log.info("send_budget_storage_back")
                self._degraded = False
            return wait

    async def _take(
        self, limiter: MovingWindowRateLimiter, budgets: list[tuple[RateLimitItem, str]]
    ) -> float:
        now = time.time()
        wait = 0.0
        for item, key in budgets:
            stats = await limiter.get_window_stats(item, self._scope, key)
            if stats.remaining <= 0:
                wait = max(wait, stats.reset_time - now)
        if wait > 0:
            return wait + WINDOW_MARGIN_SECONDS
        for item, key in budgets:
            if not await limiter.hit(item, self._scope, key):
                # What was taken before stays spent: erring towards fewer sends.
                return RACE_RETRY_SECONDS
        return 0.0


def _item(rate: Rate, name: str) -> RateLimitItem:
    return RateLimitItemPerSecond(rate.amount, rate.seconds, namespace=f"{NAMESPACE}-{name}")
