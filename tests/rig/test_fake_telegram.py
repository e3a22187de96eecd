"""The fake Telegram Bot API server, driven raw over HTTP and through the real PTB Application.

Why: every opsgate chat test trusts ``FakeTelegram``. The raw tests pin the refusals that
production error handling depends on (status codes and exact descriptions); the PTB tests pin
that the unmodified library - request encoding, error mapping, Updater long polling, handlers -
works against it the way it works against Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Conflict, Forbidden, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

from opsgate.sandbox.request_holds import HoldOutcome
from opsgate.sandbox.telegram_api import POLLING_CONFLICT, FakeTelegram, FakeUser

GROUP = -1001234567890
FORUM = -1009876543210
TOPIC = 77
ALICE_ID = 4242

Response = tuple[int, dict[str, Any]]


@pytest_asyncio.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        fake.add_chat(GROUP)
        fake.add_chat(FORUM, title="Incidents", is_forum=True)
        fake.add_topic(FORUM, TOPIC, name="db-primary")
        fake.add_chat(ALICE_ID, type="private", title="Alice")
        yield fake


@pytest_asyncio.fixture
async def api(tg: FakeTelegram) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{tg.root_url}/bot{tg.token}/") as client:
        yield client


@pytest.fixture
def alice(tg: FakeTelegram) -> FakeUser:
    return tg.user(ALICE_ID, "alice", "Alice")


async def call(client: httpx.AsyncClient, method: str, **params: Any) -> Response:
    """Encode like PTB does: a form in which every non-string value is JSON text."""
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    response = await client.post(method, data=form)
    return response.status_code, response.json()


def bad(description: str) -> Response:
    return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


def keyboard(*buttons: tuple[str, str]) -> dict[str, Any]:
    return {"inline_keyboard": [[{"text": t, "callback_data": d} for t, d in buttons]]}


async def bot_says(client: httpx.AsyncClient, chat_id: int, text: str, **params: Any) -> int:
    status, body = await call(client, "sendMessage", chat_id=chat_id, text=text, **params)
    assert status == 200, body
    return int(body["result"]["message_id"])


# ---------------------------------------------------------------------------------------------
# Protocol


@pytest.mark.asyncio
async def test_protocol_errors_and_case_insensitive_method_names(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=tg.root_url) as raw:
        wrong_token = await raw.post("/bot999:NOPE/getMe")
        unknown_method = await raw.post(f"/bot{tg.token}/sendTelepathy")

    assert (wrong_token.status_code, wrong_token.json()) == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert (unknown_method.status_code, unknown_method.json()) == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found"},
    )
    status, body = await call(api, "getme")
    assert status == 200
    assert body["result"]["username"] == "opsgate_bot"
    assert body["result"]["id"] == 123456  # the token's prefix
    assert [c.method for c in tg.calls] == ["getMe", "sendTelepathy", "getMe"]


@pytest.mark.asyncio
async def test_parameters_are_typed_per_field_in_every_encoding(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    form = await api.post("sendMessage", data={"chat_id": str(GROUP), "text": "42"})
    json_body = await api.post("sendMessage", json={"chat_id": GROUP, "text": "json"})
    query = await api.get("sendMessage", params={"chat_id": str(GROUP), "text": "query"})

    assert [r.status_code for r in (form, json_body, query)] == [200, 200, 200]
    assert form.json()["result"]["text"] == "42"  # a text that looks like JSON stays a string
    assert [m.plain_text for m in tg.messages(GROUP)] == ["42", "json", "query"]
    assert tg.calls[0].params == {"chat_id": GROUP, "text": "42"}


# ---------------------------------------------------------------------------------------------
# Text and HTML


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("<p>alert</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("héllo <x>", 'Unsupported start tag "x" at byte offset 7'),  # UTF-8 byte offset
        ("replicas < 3", 'Unsupported start tag "" at byte offset 9'),
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("tail <", "Unclosed start tag at byte offset 5"),
        ("a&nbsp;b", 'Unsupported HTML entity "&nbsp;" at byte offset 1'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ('<tg-time format="r">x</tg-time>', 'Tag "tg-time" must have an integer attribute "unix"'),
        (
            '<tg-time unix="1" format="rt">x</tg-time>',
            'Invalid date and time format "rt" in the tag "tg-time"',
        ),
    ],
)
async def test_invalid_html_is_refused(api: httpx.AsyncClient, text: str, detail: str) -> None:
    result = await call(api, "sendMessage", chat_id=GROUP, text=text, parse_mode="HTML")
    assert result == bad(f"can't parse entities: {detail}")


@pytest.mark.asyncio
async def test_valid_html_becomes_visible_text_and_entities(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    source = (
        "  <b>R&D</b> &amp; co: &lt;db&gt; <a href='https://x.test/?a=1&amp;b=2'>runbook</a> "
        '<span class="tg-spoiler">s</span><blockquote expandable>q</blockquote>'
        '<tg-time unix="1796000000" format="r">t</tg-time><tg-time unix=1796000000>u</tg-time>\n'
    )
    status, body = await call(api, "sendMessage", chat_id=GROUP, text=source, parse_mode="html")

    assert status == 200, body
    result = body["result"]
    assert result["text"] == "R&D & co: <db> runbook sqtu"
    assert result["entities"] == [
        {"type": "bold", "offset": 0, "length": 3},
        {"type": "text_link", "offset": 15, "length": 7, "url": "https://x.test/?a=1&b=2"},
        {"type": "spoiler", "offset": 23, "length": 1},
        {"type": "expandable_blockquote", "offset": 24, "length": 1},
        {
            "type": "date_time",
            "offset": 25,
            "length": 1,
            "unix_time": 1796000000,
            "date_time_format": "r",
        },
        {"type": "date_time", "offset": 26, "length": 1, "unix_time": 1796000000},
    ]
    message = tg.messages(GROUP)[0]
    assert (message.text, message.plain_text) == (source, result["text"])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<b>" + "a" * 4096 + "</b>", True),  # tags do not count
        ("&lt;" * 4096, True),  # an entity is one character
        ("a" * 4097, False),
        ("😀" * 2048, True),  # 4096 UTF-16 code units
        ("😀" * 2048 + "a", False),
    ],
)
async def test_length_limit_counts_visible_utf16_units(
    api: httpx.AsyncClient, text: str, ok: bool
) -> None:
    status, body = await call(api, "sendMessage", chat_id=GROUP, text=text, parse_mode="HTML")
    assert (status, body) == ((200, body) if ok else bad("message is too long"))


@pytest.mark.asyncio
@pytest.mark.parametrize("params", [{}, {"text": ""}, {"text": " \n "}, {"text": "<b></b>"}])
async def test_empty_text_is_refused(api: httpx.AsyncClient, params: dict[str, str]) -> None:
    result = await call(api, "sendMessage", chat_id=GROUP, parse_mode="HTML", **params)
    assert result == bad("message text is empty")


# ---------------------------------------------------------------------------------------------
# Keyboards, chats, edits


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("markup", "description"),
    [
        (keyboard(("Ack", "x" * 65)), "BUTTON_DATA_INVALID"),
        (keyboard(("Ack", "é" * 33)), "BUTTON_DATA_INVALID"),  # 66 bytes in UTF-8
        (keyboard(("Ack", "")), "BUTTON_DATA_INVALID"),
        (keyboard(("", "ack")), "can't parse inline keyboard button: Text must be non-empty"),
        (
            {"inline_keyboard": [[{"text": "Ack"}]]},
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
        ),
        (keyboard(*[(str(i), str(i)) for i in range(101)]), "REPLY_MARKUP_TOO_LONG"),
    ],
)
async def test_invalid_inline_keyboards_are_refused(
    api: httpx.AsyncClient, markup: dict[str, Any], description: str
) -> None:
    result = await call(api, "sendMessage", chat_id=GROUP, text="t", reply_markup=markup)
    assert result == bad(description)


@pytest.mark.asyncio
async def test_callback_data_of_64_bytes_is_accepted(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    await bot_says(api, GROUP, "t", reply_markup=keyboard(("Ack", "é" * 32)))
    assert tg.messages(GROUP)[0].buttons == [("Ack", "é" * 32)]


@pytest.mark.asyncio
async def test_unknown_and_blocked_chats(tg: FakeTelegram, api: httpx.AsyncClient) -> None:
    message_id = await bot_says(api, GROUP, "before")
    tg.block_chat(GROUP)
    tg.block_chat(ALICE_ID)

    assert await call(api, "sendMessage", chat_id=-1, text="x") == bad("chat not found")
    assert await call(api, "sendMessage", chat_id=GROUP, text="x") == (
        403,
        {
            "ok": False,
            "error_code": 403,
            "description": "Forbidden: bot was kicked from the supergroup chat",
        },
    )
    status, body = await call(api, "sendMessage", chat_id=ALICE_ID, text="x")
    assert (status, body["description"]) == (403, "Forbidden: bot was blocked by the user")
    status, _ = await call(
        api, "editMessageText", chat_id=GROUP, message_id=message_id, text="after"
    )
    assert status == 403


@pytest.mark.asyncio
async def test_edit_rules(tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser) -> None:
    ack = keyboard(("Ack", "ack:1"))
    bot_id = await bot_says(api, GROUP, "<b>Disk full</b>", parse_mode="HTML", reply_markup=ack)
    user_id = tg.send_text(GROUP, alice, "on it").message_id

    async def edit(message_id: int, text: str, **params: Any) -> Response:
        return await call(
            api, "editMessageText", chat_id=GROUP, message_id=message_id, text=text, **params
        )

    assert await edit(999, "x") == bad("message to edit not found")
    assert await edit(user_id, "x") == bad("message can't be edited")
    not_modified = bad(
        "message is not modified: specified new message content and reply markup are exactly "
        "the same as a current content and reply markup of the message"
    )
    # Same visible text and entities, written differently: still "not modified".
    assert (
        await edit(bot_id, "<strong>Disk full</strong>", parse_mode="HTML", reply_markup=ack)
        == not_modified
    )

    # Omitting reply_markup is a change: it removes the keyboard.
    status, body = await edit(bot_id, "<b>Disk full</b>", parse_mode="HTML")
    assert status == 200
    assert "reply_markup" not in body["result"]
    assert isinstance(body["result"]["edit_date"], int)
    message = tg.message(GROUP, bot_id)
    assert (message.buttons, message.edit_count) == ([], 1)

    markup_edit = await call(
        api, "editMessageReplyMarkup", chat_id=GROUP, message_id=bot_id, reply_markup=ack
    )
    assert markup_edit[0] == 200
    assert message.buttons == [("Ack", "ack:1")]
    assert (
        await call(
            api, "editMessageReplyMarkup", chat_id=GROUP, message_id=bot_id, reply_markup=ack
        )
        == not_modified
    )

    await edit(bot_id, "Disk fine", reply_markup=ack)
    assert message.history == ["<b>Disk full</b>", "<b>Disk full</b>", "<b>Disk full</b>"]
    assert (message.text, message.plain_text, message.edit_count) == ("Disk fine", "Disk fine", 3)


@pytest.mark.asyncio
async def test_replies_and_forum_topics(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    assert await call(
        api, "sendMessage", chat_id=GROUP, text="x", reply_parameters={"message_id": 404}
    ) == bad("message to be replied not found")
    assert await call(api, "sendMessage", chat_id=FORUM, text="x", message_thread_id=5) == bad(
        "message thread not found"
    )

    lenient = await bot_says(
        api, GROUP, "x", reply_parameters={"message_id": 404, "allow_sending_without_reply": True}
    )
    assert tg.message(GROUP, lenient).reply_to_message_id is None

    question = tg.send_text(FORUM, alice, "/status", message_thread_id=TOPIC)
    legacy = await bot_says(api, FORUM, "legacy", reply_to_message_id=question.message_id)
    status, body = await call(
        api,
        "sendMessage",
        chat_id=FORUM,
        text="all good",
        reply_parameters={"message_id": question.message_id, "chat_id": FORUM},
    )

    assert status == 200
    result = body["result"]
    # A reply joins the topic of the message it replies to.
    assert (result["message_thread_id"], result["is_topic_message"]) == (TOPIC, True)
    assert result["reply_to_message"]["text"] == "/status"
    assert tg.message(FORUM, legacy).reply_to_message_id == question.message_id
    # Message ids continue past the topic's creation message.
    assert question.message_id == TOPIC + 1

    status, body = await call(
        api, "sendMessage", chat_id=FORUM, text="fyi", message_thread_id=TOPIC
    )
    implicit = body["result"]["reply_to_message"]
    assert implicit["message_id"] == TOPIC
    assert implicit["forum_topic_created"]["name"] == "db-primary"
    assert tg.messages(FORUM)[-1].reply_to_message_id is None


# ---------------------------------------------------------------------------------------------
# Callback queries


@pytest.mark.asyncio
async def test_callback_query_answers(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    message_id = await bot_says(api, GROUP, "Restart?", reply_markup=keyboard(("Yes", "yes")))
    with pytest.raises(AssertionError, match="no button with callback_data 'no'"):
        tg.tap(GROUP, message_id, alice, "no")
    query_id = tg.tap(GROUP, message_id, alice, "yes")
    too_old = bad("query is too old and response timeout expired or query ID is invalid")

    assert await call(api, "answerCallbackQuery", callback_query_id="123") == too_old
    assert await call(
        api, "answerCallbackQuery", callback_query_id=query_id, text="x" * 201
    ) == bad("MESSAGE_TOO_LONG")
    assert [q.id for q in tg.unanswered_callback_queries()] == [query_id]
    assert await call(
        api, "answerCallbackQuery", callback_query_id=query_id, text="Done", show_alert=True
    ) == (200, {"ok": True, "result": True})
    assert await call(api, "answerCallbackQuery", callback_query_id=query_id) == too_old

    answer = await tg.wait_answer(query_id)
    assert (answer.text, answer.show_alert) == ("Done", True)
    assert tg.unanswered_callback_queries() == []


@pytest.mark.asyncio
async def test_a_forged_tap_carries_data_the_message_never_offered(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    message_id = await bot_says(api, GROUP, "Restart?", reply_markup=keyboard(("Yes", "yes")))
    plain = await bot_says(api, FORUM, "no buttons here")
    tg.tap_forged(FORUM, plain, alice, "yes")
    tg.tap_forged(GROUP, message_id, alice, "v1:ap:other-card")

    status, body = await call(api, "getUpdates", timeout=0)
    assert status == 200
    taps = [u["callback_query"] for u in body["result"]]
    assert [(t["message"]["chat"]["id"], t["message"]["message_id"], t["data"]) for t in taps] == [
        (FORUM, plain, "yes"),
        (GROUP, message_id, "v1:ap:other-card"),
    ]
    for tap in taps:
        assert await call(api, "answerCallbackQuery", callback_query_id=tap["id"]) == (
            200,
            {"ok": True, "result": True},
        )


# ---------------------------------------------------------------------------------------------
# Injected failures and flood control


@pytest.mark.asyncio
async def test_injected_errors(api: httpx.AsyncClient, tg: FakeTelegram) -> None:
    tg.inject_error("sendMessage", retry_after=7, count=2)
    tg.inject_error("sendmessage", migrate_to_chat_id=-100555)

    for _ in range(2):
        assert await call(api, "sendMessage", chat_id=GROUP, text="x") == (
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 7",
                "parameters": {"retry_after": 7},
            },
        )
    assert await call(api, "sendMessage", chat_id=GROUP, text="x") == (
        400,
        {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": -100555},
        },
    )
    assert (await call(api, "sendMessage", chat_id=GROUP, text="x"))[0] == 200
    assert tg.messages(GROUP)[0].plain_text == "x"  # failed calls changed nothing
    with pytest.raises(ValueError, match="does not implement"):
        tg.inject_error("sendPhoto")


@pytest.mark.asyncio
async def test_a_delayed_answer_comes_after_the_effect(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    tg.delay_answer("sendmessage", 30)
    impatient = httpx.Timeout(10, read=0.2)
    with pytest.raises(httpx.ReadTimeout):
        await api.post(
            "sendMessage", data={"chat_id": str(GROUP), "text": "lost"}, timeout=impatient
        )
    # The client gave up, but the message was sent and the call is on record.
    assert [m.plain_text for m in tg.messages(GROUP)] == ["lost"]
    assert [(c.method, c.status) for c in tg.calls] == [("sendMessage", 200)]

    # Only the next call was delayed; a short delay is an answer that arrives.
    assert await bot_says(api, GROUP, "prompt") == 2
    tg.delay_answer("editMessageText", 0.05)
    status, body = await call(api, "editMessageText", chat_id=GROUP, message_id=2, text="late")
    assert (status, body["result"]["text"]) == (200, "late")
    with pytest.raises(ValueError, match="does not implement"):
        tg.delay_answer("sendPhoto", 1)


@pytest.mark.asyncio
async def test_stopping_ends_a_delayed_answer() -> None:
    fake = FakeTelegram()
    await fake.start()
    fake.add_chat(GROUP)
    fake.delay_answer("sendMessage", 3600)
    async with httpx.AsyncClient(base_url=f"{fake.root_url}/bot{fake.token}/") as client:
        pending = asyncio.create_task(call(client, "sendMessage", chat_id=GROUP, text="x"))
        await fake.wait_for(lambda: bool(fake.calls))
        await asyncio.wait_for(fake.stop(), 20)
        with contextlib.suppress(httpx.HTTPError):
            await asyncio.wait_for(pending, 20)


@pytest.mark.asyncio
async def test_chat_rate_limit_counts_sends_and_edits(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    tg.set_chat_rate_limit(2, window=30)
    message_id = await bot_says(api, GROUP, "one")
    await call(api, "editMessageText", chat_id=GROUP, message_id=message_id, text="two")

    status, body = await call(api, "sendMessage", chat_id=GROUP, text="three")
    assert status == 429
    assert body["parameters"]["retry_after"] == 30
    assert (await call(api, "sendMessage", chat_id=ALICE_ID, text="other chat"))[0] == 200


# ---------------------------------------------------------------------------------------------
# Updates: long polling, privacy mode, webhooks


@pytest.mark.asyncio
async def test_long_polling_and_confirm_by_offset(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await call(api, "getUpdates", timeout=0.2) == (200, {"ok": True, "result": []})
    assert loop.time() - started >= 0.2

    poll = asyncio.create_task(call(api, "getUpdates", timeout=5))
    await asyncio.sleep(0.2)  # let the long poll reach the server
    started = loop.time()
    tg.send_text(ALICE_ID, alice, "hello")
    _, body = await poll
    assert loop.time() - started < 1  # answered as soon as the update arrived
    [update] = body["result"]
    assert update["message"]["text"] == "hello"

    tg.send_text(ALICE_ID, alice, "again")
    _, unconfirmed = await call(api, "getUpdates")
    assert [u["message"]["text"] for u in unconfirmed["result"]] == ["hello", "again"]
    _, rest = await call(api, "getUpdates", offset=update["update_id"] + 1, limit=1)
    assert [u["message"]["text"] for u in rest["result"]] == ["again"]
    _, last = await call(api, "getUpdates", offset=-1)
    assert [u["message"]["text"] for u in last["result"]] == ["again"]


@pytest.mark.asyncio
async def test_newer_get_updates_terminates_the_pending_one(api: httpx.AsyncClient) -> None:
    first = asyncio.create_task(call(api, "getUpdates", timeout=5))
    await asyncio.sleep(0.2)  # let the first long poll reach the server
    second = await call(api, "getUpdates", timeout=0)

    assert second == (200, {"ok": True, "result": []})
    status, body = await first
    assert status == 409
    assert body["description"].startswith("Conflict: terminated by other getUpdates request")


@pytest.mark.asyncio
async def test_privacy_mode_hides_group_chatter(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    bot_message = await bot_says(api, GROUP, "Alert!")
    tg.send_text(GROUP, alice, "who is on call?")
    tg.send_text(GROUP, alice, "/ping@other_bot")
    tg.send_text(GROUP, alice, "/ping@opsgate_bot now")
    tg.send_text(GROUP, alice, "/ack")
    tg.send_text(GROUP, alice, "looking", reply_to_message_id=bot_message)

    _, body = await call(api, "getUpdates")
    updates = body["result"]
    assert [u["message"]["text"] for u in updates] == ["/ping@opsgate_bot now", "/ack", "looking"]
    assert updates[0]["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 17}]
    assert len(tg.messages(GROUP)) == 6  # hidden messages are still in the transcript


@pytest.mark.asyncio
async def test_webhook_delivery_retries_until_accepted(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", receiver)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        assert await call(api, "setWebhook", url="ftp://x/hook") == bad(
            "bad webhook: An HTTPS URL must be provided for webhook"
        )
        assert await call(
            api, "setWebhook", url=f"http://{host}:{port}/hook", secret_token="s3cr3t!"
        ) == bad("secret token contains unallowed characters")
        url = f"http://{host}:{port}/hook"
        assert (await call(api, "setWebhook", url=url, secret_token="s3cr3t"))[0] == 200

        status, body = await call(api, "getUpdates")
        assert (status, body["description"]) == (
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
            "delete the webhook first",
        )

        tg.send_text(ALICE_ID, alice, "via webhook")
        await tg.wait_for(lambda: len(received) == 2, timeout=2)
        assert [secret for secret, _ in received] == ["s3cr3t", "s3cr3t"]
        assert received[0][1] == received[1][1]  # the same update, retried
        assert received[1][1]["message"]["text"] == "via webhook"
        _, info = await call(api, "getWebhookInfo")
        assert info["result"]["url"] == url
        assert info["result"]["pending_update_count"] == 0
        assert info["result"]["last_error_message"].startswith(
            "Wrong response from the webhook: 500"
        )

        assert (await call(api, "deleteWebhook", drop_pending_updates=True))[0] == 200
        assert await call(api, "getUpdates") == (200, {"ok": True, "result": []})
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------------------------
# Commands and test helpers


@pytest.mark.asyncio
async def test_bot_commands_per_scope_and_language(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    ping = [{"command": "ping", "description": "Is the bot alive?"}]
    scope = {"type": "chat", "chat_id": GROUP}

    assert await call(
        api, "setMyCommands", commands=[{"command": "Ping", "description": "x"}]
    ) == bad("BOT_COMMAND_INVALID")
    assert (await call(api, "setMyCommands", commands=ping, scope=scope, language_code="en"))[
        0
    ] == 200

    assert tg.commands == {(f"chat:{GROUP}", "en"): ping}
    assert (await call(api, "getMyCommands", scope=scope, language_code="en"))[1]["result"] == ping
    assert (await call(api, "getMyCommands"))[1]["result"] == []
    await call(api, "deleteMyCommands", scope=scope, language_code="en")
    assert tg.commands == {}


@pytest.mark.asyncio
async def test_wait_for_timeout_explains_what_happened(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    await bot_says(api, GROUP, "Deploy?", reply_markup=keyboard(("Go", "go")))
    tg.tap(GROUP, 1, alice, "go")

    with pytest.raises(TimeoutError) as raised:
        await tg.wait_for(lambda: False, timeout=0.05)

    report = str(raised.value)
    assert "sendMessage -> 200" in report
    assert "#1 bot: 'Deploy?' buttons=[('Go', 'go')]" in report
    assert "unanswered callback queries" in report


# ---------------------------------------------------------------------------------------------
# The real python-telegram-bot Application


@contextlib.asynccontextmanager
async def polling_bot(
    tg: FakeTelegram, *handlers: BaseHandler[Update, Any, Any]
) -> AsyncIterator[Application[Any, Any, Any, Any, Any, Any]]:
    app = ApplicationBuilder().token(tg.token).base_url(f"{tg.root_url}/bot").build()
    app.add_handlers(handlers)
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def pong(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text("<b>pong</b>", parse_mode=ParseMode.HTML)


@pytest.mark.asyncio
async def test_ptb_command_handler_in_private_and_group(tg: FakeTelegram, alice: FakeUser) -> None:
    async with polling_bot(tg, CommandHandler("ping", pong)):
        tg.send_text(ALICE_ID, alice, "/ping")
        question = tg.send_text(GROUP, alice, "/ping@opsgate_bot")
        await tg.wait_for(lambda: len(tg.messages(GROUP)) == 2 and len(tg.messages(ALICE_ID)) == 2)

    private_reply = tg.messages(ALICE_ID)[1]
    group_reply = tg.messages(GROUP)[1]
    assert (private_reply.from_bot, private_reply.plain_text) == (True, "pong")
    assert private_reply.reply_to_message_id is None  # PTB quotes only outside private chats
    assert group_reply.text == "<b>pong</b>"
    assert group_reply.reply_to_message_id == question.message_id
    assert all(call.status == 200 for call in tg.calls)


@pytest.mark.asyncio
async def test_ptb_callback_query_answered_and_keyboard_dropped(
    tg: FakeTelegram, alice: FakeUser
) -> None:
    async def on_tap(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.from_user is not None
        await query.answer("Restarting")
        await query.edit_message_text(
            f"Restart approved by @{query.from_user.username}", parse_mode=ParseMode.HTML
        )

    async with polling_bot(tg, CallbackQueryHandler(on_tap, pattern="^restart$")) as app:
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("Restart", callback_data="restart")]])
        sent = await app.bot.send_message(GROUP, "Pod crashlooping", reply_markup=markup)
        query_id = tg.tap(GROUP, sent.message_id, alice, "restart")
        answer = await tg.wait_answer(query_id)
        await tg.wait_for(lambda: tg.message(GROUP, sent.message_id).edit_count == 1)

    message = tg.message(GROUP, sent.message_id)
    assert (answer.text, answer.show_alert) == ("Restarting", False)
    assert message.plain_text == "Restart approved by @alice"
    assert message.buttons == []
    assert message.history == ["Pod crashlooping"]
    assert tg.unanswered_callback_queries() == []
    with pytest.raises(AssertionError, match="its buttons now: \\[\\]"):
        tg.tap(GROUP, sent.message_id, alice, "restart")


@pytest.mark.asyncio
async def test_ptb_reply_lands_in_the_forum_topic(tg: FakeTelegram, alice: FakeUser) -> None:
    seen: list[Update] = []

    async def record_and_pong(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(update)
        await pong(update, context)

    async with polling_bot(tg, CommandHandler("ping", record_and_pong)):
        question = tg.send_text(FORUM, alice, "/ping", message_thread_id=TOPIC)
        await tg.wait_for(lambda: len(tg.messages(FORUM)) == 2)

    reply = tg.messages(FORUM)[1]
    assert (reply.message_thread_id, reply.reply_to_message_id) == (TOPIC, question.message_id)
    [send] = [call for call in tg.calls if call.method == "sendMessage"]
    assert send.params["reply_parameters"] == {"message_id": question.message_id}
    assert send.params["message_thread_id"] == TOPIC
    incoming = seen[0].message
    assert incoming is not None and incoming.is_topic_message
    # The topic quirk reaches PTB: reply_to_message is the topic's creation message.
    assert incoming.reply_to_message is not None
    assert incoming.reply_to_message.forum_topic_created is not None


@pytest.mark.asyncio
async def test_ptb_sees_conflict_while_a_webhook_is_set(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    await call(api, "setWebhook", url="https://opsgate.example/telegram")
    app = ApplicationBuilder().token(tg.token).base_url(f"{tg.root_url}/bot").build()
    async with app:
        with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
            await app.bot.get_updates(timeout=0)

    # Starting to poll deletes the webhook first, as PTB's Updater does against Telegram.
    async with polling_bot(tg, CommandHandler("ping", pong)):
        tg.send_text(ALICE_ID, alice, "/ping")
        await tg.wait_for(lambda: len(tg.messages(ALICE_ID)) == 2)
    assert "deleteWebhook" in [call.method for call in tg.calls]


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # RetryAfter's own
async def test_ptb_maps_refusals_to_its_exceptions(tg: FakeTelegram) -> None:
    app = ApplicationBuilder().token(tg.token).base_url(f"{tg.root_url}/bot").build()
    tg.inject_error("sendMessage", retry_after=3)
    tg.inject_error("sendMessage", migrate_to_chat_id=-100777)
    tg.block_chat(ALICE_ID)
    async with app:
        with pytest.raises(RetryAfter, match="Retry in 3 seconds"):
            await app.bot.send_message(GROUP, "x")
        with pytest.raises(ChatMigrated) as migrated:
            await app.bot.send_message(GROUP, "x")
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await app.bot.send_message(ALICE_ID, "x")
        with pytest.raises(BadRequest) as parse_error:
            await app.bot.send_message(GROUP, "<p>x</p>", parse_mode=ParseMode.HTML)

    assert migrated.value.new_chat_id == -100777
    # PTB strips "Bad Request: " and capitalize()s the rest, lower-casing "Unsupported".
    assert parse_error.value.message == (
        'Can\'t parse entities: unsupported start tag "p" at byte offset 0'
    )


# ---------------------------------------------------------------------------------------------
# Holds and replicas, for crash tests


@pytest.mark.asyncio
async def test_held_call_is_carried_out_only_when_released(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    card = await bot_says(api, GROUP, "Restart web?")
    elsewhere = await bot_says(api, ALICE_ID, "Restart web?")
    hold = tg.hold("editMessageText", chat_id=GROUP)

    # Other chats and other methods pass.
    await call(api, "editMessageText", chat_id=ALICE_ID, message_id=elsewhere, text="Approved")
    await bot_says(api, GROUP, "unrelated")
    edit = asyncio.create_task(
        call(api, "editMessageText", chat_id=GROUP, message_id=card, text="Approved")
    )
    held = await hold.wait_arrived()

    assert (held.method, held.params["chat_id"], held.outcome) == (
        "editMessageText",
        GROUP,
        HoldOutcome.HELD,
    )
    assert tg.message(GROUP, card).plain_text == "Restart web?"
    assert not edit.done()
    hold.release()
    status, body = await edit
    assert (status, body["result"]["text"]) == (200, "Approved")
    assert tg.message(GROUP, card).plain_text == "Approved"
    assert held.outcome is HoldOutcome.RELEASED


async def _give_up_by_cancelling(client: aiohttp.ClientSession, sent: asyncio.Task[Any]) -> None:
    sent.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sent


async def _give_up_by_closing(client: aiohttp.ClientSession, sent: asyncio.Task[Any]) -> None:
    await client.close()
    with pytest.raises(aiohttp.ClientError):
        await sent


async def _post(client: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with client.post(url, json=params) as response:
        return await response.json()


@pytest.mark.asyncio
@pytest.mark.parametrize("give_up", [_give_up_by_cancelling, _give_up_by_closing])
async def test_held_call_is_dropped_when_the_client_goes_away(
    tg: FakeTelegram, api: httpx.AsyncClient, give_up: Any
) -> None:
    card = await bot_says(api, GROUP, "Restart web?")
    hold = tg.hold("editMessageText")

    async with aiohttp.ClientSession() as client:
        edit = asyncio.create_task(
            _post(
                client,
                f"{tg.root_url}/bot{tg.token}/editMessageText",
                chat_id=GROUP,
                message_id=card,
                text="Approved",
            )
        )
        await hold.wait_arrived()
        await give_up(client, edit)
        dropped = await hold.wait_dropped()
    hold.release()

    # The next call is served after the dropped one would have been: it was never carried out.
    assert (await call(api, "getMe"))[0] == 200
    assert dropped.outcome is HoldOutcome.DROPPED
    assert tg.message(GROUP, card).plain_text == "Restart web?"
    assert [c.method for c in tg.calls] == ["sendMessage", "getMe"]


@pytest.mark.asyncio
async def test_held_answer_send_message_is_in_the_transcript_with_its_id(
    tg: FakeTelegram, api: httpx.AsyncClient
) -> None:
    hold = tg.hold_answer("sendMessage", chat_id=GROUP)

    # Refusals are answered at once and do not use up the hold.
    assert (await call(api, "sendMessage", chat_id=GROUP, text="<p>", parse_mode="HTML"))[0] == 400
    sent = asyncio.create_task(call(api, "sendMessage", chat_id=GROUP, text="Restart web?"))
    await hold.wait_arrived()

    [message] = tg.messages(GROUP)
    assert message.plain_text == "Restart web?"  # people see it; the bot has no id for it yet
    assert [(c.method, c.status) for c in tg.calls] == [("sendMessage", 400), ("sendMessage", 200)]
    assert not sent.done()
    hold.release()
    status, body = await sent
    assert (status, body["result"]["message_id"]) == (200, message.message_id)


@pytest.mark.asyncio
async def test_held_answer_lost_with_its_client_leaves_the_message(tg: FakeTelegram) -> None:
    hold = tg.hold_answer("sendMessage")

    async with aiohttp.ClientSession() as client:
        sent = asyncio.create_task(
            _post(client, f"{tg.root_url}/bot{tg.token}/sendMessage", chat_id=GROUP, text="Hi")
        )
        await hold.wait_arrived()
        await _give_up_by_closing(client, sent)
        await hold.wait_dropped()

    assert [m.plain_text for m in tg.messages(GROUP)] == ["Hi"]


@pytest.mark.asyncio
async def test_newer_long_poll_terminates_a_waiting_one_at_once(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    first = asyncio.create_task(call(api, "getUpdates", timeout=30))
    await tg.wait_for(lambda: tg.waiting_long_polls == 1)
    second = asyncio.create_task(call(api, "getUpdates", timeout=30))

    status, body = await asyncio.wait_for(first, 10)
    assert (status, body["description"]) == (409, POLLING_CONFLICT)
    assert not second.done()  # still polling: answered by the update, not by a timeout
    tg.send_text(ALICE_ID, alice, "hello")
    _, updates = await asyncio.wait_for(second, 10)
    assert [u["message"]["text"] for u in updates["result"]] == ["hello"]


_KILLABLE_POLL = """
import sys, httpx
httpx.post(sys.argv[1], data={"timeout": "60"}, timeout=120)
"""


@pytest.mark.asyncio
async def test_long_poll_of_a_killed_bot_does_not_block_the_next(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLABLE_POLL, f"{tg.root_url}/bot{tg.token}/getUpdates"
    )
    try:
        await tg.wait_for(lambda: tg.waiting_long_polls == 1, timeout=60)
    finally:
        child.kill()
        await child.wait()
    await tg.wait_for(lambda: tg.waiting_long_polls == 0)  # the server saw the connection close

    tg.send_text(ALICE_ID, alice, "are you there?")
    _, body = await call(api, "getUpdates", timeout=5)
    assert [u["message"]["text"] for u in body["result"]] == ["are you there?"]
    assert [c.method for c in tg.calls] == ["getUpdates"]  # the killed poll was never answered


class Replica:
    """A webhook receiver standing in for one opsgate replica behind a load balancer.

    ``script`` says how it treats its first requests (after that it answers 200): ``"500"``
    answers 500, ``"reset"`` reads the update and closes the connection without answering, as a
    replica killed mid-request would, ``"hang"`` never answers.
    """

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.received: list[tuple[str, str | None, dict[str, Any]]] = []  # path, secret, body
        self.origin = ""
        self._runner: web.AppRunner | None = None

    @property
    def update_ids(self) -> list[int]:
        return [body["update_id"] for _, _, body in self.received]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.origin = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        self.received.append((request.path_qs, secret, await request.json()))
        behaviour = self.script.pop(0) if self.script else "ok"
        if behaviour == "reset":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if behaviour == "hang":
            await asyncio.Event().wait()
        return web.Response(status=500 if behaviour == "500" else 200)


@contextlib.asynccontextmanager
async def replicas(*replicas: Replica) -> AsyncIterator[None]:
    for replica in replicas:
        await replica.start()
    try:
        yield
    finally:
        for replica in replicas:
            await replica.stop()


@contextlib.contextmanager
def refusing_origin() -> Iterator[str]:
    """An origin whose port is bound but not listening: every connection is refused, and no other
    program can take the port while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.asyncio
async def test_webhook_round_robins_and_retries_a_refused_update_at_the_next(
    tg: FakeTelegram, api: httpx.AsyncClient, alice: FakeUser
) -> None:
    first, second = Replica(), Replica()
    with pytest.raises(ValueError, match="no path"):
        tg.route_webhook_to(["http://127.0.0.1:1/hooks"])
    async with replicas(first, second):
        with refusing_origin() as dead:
            tg.route_webhook_to([first.origin, dead, second.origin])
            url = "https://opsgate.example/hooks/telegram?replica=any"
            assert (await call(api, "setWebhook", url=url, secret_token="s3cr3t"))[0] == 200
            for text in ("one", "two", "three", "four"):
                tg.send_text(ALICE_ID, alice, text)
            await tg.wait_for(lambda: len(first.received) + len(second.received) == 4)

    assert (first.update_ids, second.update_ids) == ([1, 3], [2, 4])
    assert [body["message"]["text"] for _, _, body in first.received + second.received] == [
        "one",
        "three",
        "two",
        "four",
    ]
    assert {(path, secret) for path, secret, _ in first.received + second.received} == {
        ("/hooks/telegram?replica=any", "s3cr3t")
    }
    assert [(d.update_id, d.url.split("/hooks")[0], d.status) for d in tg.webhook_deliveries] == [
        (1, first.origin, 200),
        (2, dead, None),
        (2, second.origin, 200),
        (3, first.origin, 200),
        (4, dead, None),
        (4, second.origin, 200),
    ]
    refused = [d for d in tg.webhook_deliveries if not d.acknowledged]
    assert all(d.error and d.error.startswith("Connection failed") for d in refused)
    _, info = await call(api, "getWebhookInfo")
    assert (info["result"]["url"], info["result"]["pending_update_count"]) == (url, 0)


@pytest.mark.asyncio
async def test_webhook_retries_until_acknowledged_and_never_loses_an_update() -> None:
    bob = 4343
    failing = Replica("500"), Replica("reset"), Replica("hang")
    healthy = Replica()
    async with (
        FakeTelegram(webhook_timeout=3) as tg,
        httpx.AsyncClient(base_url=f"{tg.root_url}/bot{tg.token}/") as api,
        replicas(*failing, healthy),
    ):
        tg.add_chat(ALICE_ID, type="private", title="Alice")
        tg.add_chat(bob, type="private", title="Bob")
        tg.route_webhook_to([replica.origin for replica in (*failing, healthy)])
        await call(api, "setWebhook", url="http://opsgate.example/hooks/telegram")
        sent = []
        for n in range(6):
            chat, name = (ALICE_ID, "alice") if n % 2 == 0 else (bob, "bob")
            sent.append(tg.send_text(chat, tg.user(chat, name), f"{name} {n}").chat_id)
        await tg.wait_for(lambda: sum(d.acknowledged for d in tg.webhook_deliveries) == 6)
        _, info = await call(api, "getWebhookInfo")

    deliveries = tg.webhook_deliveries
    origins = [replica.origin for replica in (*failing, healthy)]
    # One update at a time: the first is retried at each replica in turn until one says 2xx.
    assert [
        (d.update_id, origins.index(d.url.split("/hooks")[0]), d.status) for d in deliveries
    ] == [
        (1, 0, 500),
        (1, 1, None),
        (1, 2, None),
        (1, 3, 200),
        (2, 0, 200),
        (3, 1, 200),
        (4, 2, 200),
        (5, 3, 200),
        (6, 0, 200),
    ]
    acknowledged = [d.update_id for d in deliveries if d.acknowledged]
    assert sorted(acknowledged) == [1, 2, 3, 4, 5, 6]  # each exactly once
    received = [i for replica in (*failing, healthy) for i in replica.update_ids]
    assert set(received) == {1, 2, 3, 4, 5, 6}
    for update_id in set(received):
        tries = [d.acknowledged for d in deliveries if d.update_id == update_id]
        # Delivered more than once only while no attempt was acknowledged.
        assert tries == [False] * (len(tries) - 1) + [True]
    for chat in (ALICE_ID, bob):
        in_chat = [i + 1 for i, c in enumerate(sent) if c == chat]
        assert [i for i in acknowledged if i in in_chat] == in_chat  # per-chat order kept
    assert info["result"]["pending_update_count"] == 0
    assert info["result"]["last_error_message"].startswith("Connection failed")


@pytest.mark.asyncio
async def test_get_chat_and_the_bots_membership(tg: FakeTelegram, api: httpx.AsyncClient) -> None:
    assert await call(api, "getChat", chat_id=-1) == bad("chat not found")
    status, body = await call(api, "getChat", chat_id=GROUP)
    assert status == 200 and body["result"]["type"] == "supergroup"
    assert body["result"]["permissions"] == {"can_send_messages": True}
    status, body = await call(api, "getChatMember", chat_id=GROUP, user_id=tg.bot_user.id)
    assert (status, body["result"]["status"]) == (200, "member")
    status, body = await call(api, "getChatMember", chat_id=GROUP, user_id=ALICE_ID)
    assert body["result"]["status"] == "left"

    tg.add_chat(-1001, bot_status="left")
    status, body = await call(api, "sendMessage", chat_id=-1001, text="x")
    assert (status, body["description"]) == (
        403,
        "Forbidden: bot is not a member of the supergroup chat",
    )
    tg.add_chat(-1002, members_can_post=False)
    assert await call(api, "sendMessage", chat_id=-1002, text="x") == bad(
        "not enough rights to send text messages to the chat"
    )
    tg.add_chat(-1003, type="channel")
    assert await call(api, "sendMessage", chat_id=-1003, text="x") == bad(
        "need administrator rights in the channel chat"
    )
    tg.add_chat(-1004, type="channel", bot_status="administrator")
    assert (await call(api, "sendMessage", chat_id=-1004, text="x"))[0] == 200
    tg.block_chat(GROUP)
    status, body = await call(api, "getChat", chat_id=GROUP)
    assert (status, body["description"]) == (
        403,
        "Forbidden: bot was kicked from the supergroup chat",
    )


@pytest.mark.asyncio
async def test_ptb_reads_get_chat_and_get_chat_member(tg: FakeTelegram) -> None:
    tg.add_chat(-1005, bot_status="administrator", members_can_post=False)
    bot = ApplicationBuilder().token(tg.token).base_url(f"{tg.root_url}/bot").build().bot
    async with bot:
        chat = await bot.get_chat(-1005)
        assert chat.permissions is not None and chat.permissions.can_send_messages is False
        member = await bot.get_chat_member(-1005, bot.id)
        assert member.status == "administrator" and getattr(member, "can_post_messages", None)
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.get_chat(-1)
