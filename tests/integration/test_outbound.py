"""The outbound scheduler against the Bot API stand-in with its flood limits on.

opsgate's own Telegram wiring (build_telegram, the real PTB Bot) sends through TelegramSender
and its scheduler to FakeTelegram, which answers 429 as Telegram does once a chat got more
messages within its window than allowed. Windows are seconds rather than Telegram's minute so
that the tests stay short; the scheduler reads them from the same ``FloodLimits`` that opsgate
builds from its settings.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import coredis
import pytest
from structlog.testing import capture_logs
from telegram.ext import Application

from opsgate.app import build_outbound, build_telegram
from opsgate.bot.outbound import OutboundScheduler
from opsgate.bot.send_budget import FloodLimits, Rate, SendBudget, redis_storage
from opsgate.bot.sender import TelegramSender
from opsgate.sandbox.telegram_api import ApiCall, FakeTelegram
from opsgate.services.chat import CardView, ChatRetryLater, ChatTarget, ResultView
from opsgate.services.chats import ChatDirectory
from opsgate.services.storage.db import Database
from opsgate.services.storage.schema_upgrade import upgrade_schema
from opsgate.settings import Settings
from tests.builders import pending_card

GROUP = -1001234567890
OTHER_GROUP = -1005555555555
ALICE_ID = 4242
REDIS_URL = os.environ.get("OPSGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CARD = pending_card("INC-FLOOD")
RESULT = ResultView(
    incident_id="INC-RES",
    action="kubectl rollout restart deployment/checkout -n shop",
    succeeded=True,
    detail="restarted",
    attempts=1,
    duration_seconds=1.5,
)
# Telegram's shape (a burst, a group window, an overall cap), in windows of seconds.
ROOMY = FloodLimits(per_chat=Rate(100, 1), per_group=Rate(100, 1), overall=Rate(100, 1))
ONE_A_SECOND = FloodLimits(per_chat=Rate(1, 1), per_group=Rate(100, 1), overall=Rate(100, 1))

App = Application[Any, Any, Any, Any, Any, Any]


def card(incident_id: str, **changes: Any) -> CardView:
    return replace(CARD, incident_id=incident_id, **changes)


def settings(api_url: str) -> Settings:
    return Settings(
        telegram_token=FakeTelegram().token,  # type: ignore[arg-type]
        alert_chat_id=GROUP,
        telegram_api_url=api_url,
    )


def sends(telegram: FakeTelegram, chat_id: int, status: int | None = 200) -> list[ApiCall]:
    return [
        call
        for call in telegram.calls
        if call.method in ("sendMessage", "editMessageText")
        and call.params.get("chat_id") == chat_id
        and status in (None, call.status)
    ]


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class Errors:
    """The sender's error callback, as the metrics get it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, method: str, kind: str) -> None:
        self.seen.append((method, kind))


@pytest.fixture
async def chats(tmp_path: Path) -> AsyncIterator[ChatDirectory]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}")
    await upgrade_schema(db)
    try:
        yield ChatDirectory(db)
    finally:
        await db.dispose()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        fake.add_chat(GROUP)
        fake.add_chat(OTHER_GROUP, title="Payments")
        fake.add_chat(ALICE_ID, type="private", title="Alice")
        yield fake


@pytest.fixture
async def app(telegram: FakeTelegram) -> AsyncIterator[App]:
    application: App = build_telegram(settings(telegram.root_url))
    async with application:
        yield application


class Senders:
    """Builds senders over the one PTB bot, each with its own scheduler, closed at the end."""

    def __init__(self, app: App, chats: ChatDirectory) -> None:
        self.app = app
        self.chats = chats
        self.built: list[TelegramSender] = []

    def __call__(
        self,
        limits: FloodLimits,
        *,
        errors: Errors | None = None,
        budget: SendBudget | None = None,
        app: App | None = None,
    ) -> tuple[TelegramSender, OutboundScheduler]:
        outbound = OutboundScheduler(budget or SendBudget(limits))
        sender = TelegramSender(
            (app or self.app).bot, self.chats, on_error=errors, outbound=outbound
        )
        self.built.append(sender)
        return sender, outbound


@pytest.fixture
async def senders(app: App, chats: ChatDirectory) -> AsyncIterator[Senders]:
    made = Senders(app, chats)
    try:
        yield made
    finally:
        for sender in made.built:
            await sender.close()


async def test_a_burst_of_cards_fits_the_group_limit_in_about_the_least_time(
    telegram: FakeTelegram, senders: Senders
) -> None:
    # 10 messages in any 3 s per group: 25 cards need at least two full windows.
    telegram.set_chat_rate_limit(10, window=3)
    limits = FloodLimits(per_chat=Rate(10, 1), per_group=Rate(10, 3), overall=Rate(30, 1))
    sender, _ = senders(limits)
    least = 2 * 3.0
    loop = asyncio.get_running_loop()
    started = loop.time()

    refs = await asyncio.gather(
        *(sender.post_card(ChatTarget(GROUP), card(f"INC-{n:04}")) for n in range(25))
    )

    elapsed = loop.time() - started
    assert len({ref.message_id for ref in refs}) == 25
    assert len(telegram.messages(GROUP)) == 25
    refused = [call for call in sends(telegram, GROUP, None) if call.status == 429]
    assert len(refused) <= 1, refused
    assert elapsed < 2 * least, f"25 cards took {elapsed:.1f} s, the limits allow {least:.0f} s"


async def test_a_429_pauses_only_the_chat_it_names(
    telegram: FakeTelegram, senders: Senders
) -> None:
    errors = Errors()
    sender, _ = senders(ROOMY, errors=errors)
    telegram.inject_error("sendMessage", retry_after=5)

    with capture_logs() as logs:
        paused = asyncio.create_task(sender.post_card(ChatTarget(GROUP), card("INC-PAUSED")))
        await telegram.wait_for(lambda: bool(sends(telegram, GROUP, 429)))
        other = await sender.post_card(ChatTarget(OTHER_GROUP), card("INC-OTHER"))
        private = await sender.send_html(ALICE_ID, "<b>still here</b>")
        assert not paused.done(), "the paused chat's card went before its retry_after"
        ref = await asyncio.wait_for(paused, 30)

    assert [m.message_id for m in telegram.messages(OTHER_GROUP)] == [other.message_id]
    assert [m.message_id for m in telegram.messages(ALICE_ID)] == [private.message_id]
    [delivered] = sends(telegram, GROUP)
    [refusal] = sends(telegram, GROUP, 429)
    assert delivered.at - refusal.at >= 4.5
    assert ref.message_id == telegram.messages(GROUP)[0].message_id
    assert errors.seen == [("sendMessage", "rate_limited")]
    [limited] = [entry for entry in logs if entry["event"] == "telegram_rate_limited"]
    assert (limited["log_level"], limited["chat_id"], limited["retry_after"]) == ("info", GROUP, 5)
    assert not [entry for entry in logs if entry["log_level"] in ("error", "critical")]


async def test_a_long_429_goes_back_to_the_caller_and_holds_only_that_chat(
    telegram: FakeTelegram, senders: Senders
) -> None:
    sender, _ = senders(ROOMY)
    telegram.inject_error("sendMessage", retry_after=120)
    with pytest.raises(ChatRetryLater) as refused:
        await sender.post_card(ChatTarget(GROUP), card("INC-LATER"))
    assert refused.value.retry_after == 120
    # Later sends to that chat are told at once, without asking Telegram again.
    calls_before = len(telegram.calls)
    with pytest.raises(ChatRetryLater):
        await sender.send_html(GROUP, "<b>also later</b>")
    assert len(telegram.calls) == calls_before
    await sender.post_card(ChatTarget(OTHER_GROUP), card("INC-ELSEWHERE"))
    assert len(telegram.messages(OTHER_GROUP)) == 1


async def test_callback_answers_do_not_wait_for_a_spent_message_budget(
    telegram: FakeTelegram, senders: Senders
) -> None:
    sender, outbound = senders(
        FloodLimits(per_chat=Rate(1, 60), per_group=Rate(1, 60), overall=Rate(1, 60))
    )
    ref = await sender.post_card(ChatTarget(GROUP), CARD)
    waiting = asyncio.create_task(sender.post_card(ChatTarget(GROUP), card("INC-WAITS")))
    await eventually(lambda: outbound.waiting(GROUP) == 1)

    [(_, data), *_] = telegram.message(GROUP, ref.message_id).buttons
    assert data is not None
    query_id = telegram.tap(GROUP, ref.message_id, telegram.user(ALICE_ID, "alice"), data)
    await asyncio.wait_for(sender.answer_callback(query_id, "Approved", alert=False), 10)

    answer = await telegram.wait_answer(query_id)
    assert answer.text == "Approved"
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert outbound.waiting(GROUP) == 0
    assert len(telegram.messages(GROUP)) == 1


async def test_edits_of_one_card_collapse_into_the_latest(
    telegram: FakeTelegram, senders: Senders
) -> None:
    sender, _ = senders(ONE_A_SECOND)
    ref = await sender.post_card(ChatTarget(GROUP), CARD)
    edits = []
    for n in range(10):
        edits.append(
            asyncio.create_task(sender.edit_card(ref, card("INC-FLOOD", summary=f"state {n}")))
        )
        await asyncio.sleep(0.02)

    assert await asyncio.gather(*edits) == [None] * 10
    edit_calls = [call for call in sends(telegram, GROUP) if call.method == "editMessageText"]
    assert 1 <= len(edit_calls) <= 2
    assert "state 9" in telegram.message(GROUP, ref.message_id).plain_text


async def test_the_most_urgent_waiting_call_goes_first(
    telegram: FakeTelegram, senders: Senders
) -> None:
    sender, outbound = senders(ONE_A_SECOND)
    target = ChatTarget(GROUP)
    ref = await sender.post_card(target, CARD)
    # Queued least urgent first, while the chat's budget is spent.
    calls = [
        sender.send_result_copy(target, replace(RESULT, incident_id="INC-COPY")),
        sender.post_card(target, card("INC-NEWCARD")),
        sender.edit_card(ref, card("INC-FLOOD", summary="edited")),
        sender.send_result(target, ref.message_id, RESULT),
        sender.send_html(GROUP, "<b>command answer</b>"),
    ]
    tasks = [asyncio.create_task(call) for call in calls]
    await eventually(lambda: outbound.waiting(GROUP) == 5)
    await asyncio.gather(*tasks)

    first, *rest = sends(telegram, GROUP)
    assert "INC-FLOOD" in first.params["text"]
    order = [
        "edit" if call.method == "editMessageText" else _which(call.params["text"]) for call in rest
    ]
    assert order == ["command", "result", "edit", "new card", "copy"]


def _which(text: str) -> str:
    for marker, name in (
        ("command answer", "command"),
        ("INC-RES", "result"),
        ("INC-NEWCARD", "new card"),
        ("INC-COPY", "copy"),
    ):
        if marker in text:
            return name
    raise AssertionError(f"unexpected message {text!r}")


async def test_an_edit_that_changes_nothing_is_no_error(
    telegram: FakeTelegram, senders: Senders
) -> None:
    errors = Errors()
    sender, _ = senders(ROOMY, errors=errors)
    ref = await sender.post_card(ChatTarget(GROUP), CARD)
    await sender.edit_card(ref, CARD)
    [refusal] = [call for call in telegram.calls if call.method == "editMessageText"]
    assert refusal.status == 400
    assert errors.seen == []


async def test_two_replicas_share_one_budget_through_redis(
    telegram: FakeTelegram, chats: ChatDirectory, senders: Senders
) -> None:
    # Telegram's count is left off: the test counts what reached it.
    limits = FloodLimits(per_chat=Rate(30, 1), per_group=Rate(5, 2), overall=Rate(30, 1))
    scope = f"test-{uuid.uuid4().hex}"
    second: App = build_telegram(settings(telegram.root_url))
    async with second:
        replicas = [
            senders(
                limits, budget=SendBudget(limits, storage=redis_storage(REDIS_URL), scope=scope)
            )[0],
            senders(
                limits,
                budget=SendBudget(limits, storage=redis_storage(REDIS_URL), scope=scope),
                app=second,
            )[0],
        ]
        await asyncio.gather(
            *(
                replica.post_card(ChatTarget(GROUP), card(f"INC-R{r}N{n:02}"))
                for r, replica in enumerate(replicas)
                for n in range(8)
            )
        )

    stamps = sorted(call.at for call in sends(telegram, GROUP))
    assert len(stamps) == 16
    # Every 2 s window holds at most 5; a little slack for the way to the server and back.
    busiest = max(sum(1 for t in stamps if start <= t < start + 2 - 0.1) for start in stamps)
    assert busiest <= 5, stamps


async def test_a_retried_edit_never_overwrites_a_newer_one(
    telegram: FakeTelegram, senders: Senders
) -> None:
    sender, _ = senders(ROOMY)
    ref = await sender.post_card(ChatTarget(GROUP), CARD)
    telegram.inject_error("editMessageText", retry_after=1)
    older = asyncio.create_task(sender.edit_card(ref, card("INC-FLOOD", summary="older")))
    await telegram.wait_for(lambda: bool(sends(telegram, GROUP, 429)))
    await sender.edit_card(ref, card("INC-FLOOD", summary="newer"))
    await asyncio.wait_for(older, 10)

    assert "newer" in telegram.message(GROUP, ref.message_id).plain_text
    edits = [call for call in sends(telegram, GROUP, None) if call.method == "editMessageText"]
    assert [call.status for call in edits] == [429, 200]


async def test_opsgate_keeps_its_budget_in_redis_under_the_bots_id(chats: ChatDirectory) -> None:
    bot_id = str(uuid.uuid4().int % 10**9 + 10**9)
    async with FakeTelegram(token=f"{bot_id}:TEST-TOKEN") as fake:
        fake.add_chat(GROUP)
        configured = Settings(
            telegram_token=fake.token,  # type: ignore[arg-type]
            alert_chat_id=GROUP,
            telegram_api_url=fake.root_url,
            redis_url=REDIS_URL,
        )
        application: App = build_telegram(configured)
        async with application:
            sender = TelegramSender(application.bot, chats, outbound=build_outbound(configured))
            await sender.post_card(ChatTarget(GROUP), CARD)
            await sender.close()
    client: coredis.Redis[str] = coredis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = await client.keys(f"*{bot_id}*")
    assert {"chat", "group", "overall"} == {
        name for key in keys for name in ("chat", "group", "overall") if f"-{name}/" in key
    }
