"""No token in the logs: a real ``opsgate serve`` at debug level, put through refused
requests, Bot API errors and a tap, never writes the bot token or the API bearer token."""

from __future__ import annotations

from pathlib import Path

import httpx

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage, FakeTelegram
from tests.builders import ALICE, am_payload
from tests.e2e.rig import CHAT_ID, WEBHOOK_TOKEN
from tests.e2e.test_approval_loop import approve_data
from tests.procs import OpsgateProcesses, serve_env


async def test_tokens_never_reach_the_logs(
    procs: OpsgateProcesses, telegram: FakeTelegram, kube: FakeKube, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}"
    env = serve_env(telegram, kube, url, tmp_path, {"log_level": "debug"})
    serve = await procs.serve(env)
    await serve.wait_healthy()

    async with httpx.AsyncClient(base_url=serve.base_url, timeout=10) as http:
        wrong = await http.post(
            "/api/v1/approvals", json={}, headers={"Authorization": "Bearer not-it"}
        )
        assert wrong.status_code == 401
        telegram.inject_error("sendMessage", status=500)
        telegram.inject_error("answerCallbackQuery", status=502)
        posted = await http.post(
            "/webhook/alertmanager",
            json=am_payload(),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        )
        assert posted.status_code == 200

    def cards() -> list[FakeMessage]:
        return [m for m in telegram.messages(CHAT_ID) if m.from_bot and m.buttons]

    await telegram.wait_for(lambda: bool(cards()), timeout=30)
    card = cards()[0]
    query = telegram.tap(
        CHAT_ID, card.message_id, telegram.user(ALICE, "alice"), approve_data(card)
    )
    await telegram.wait_answer(query, timeout=30)
    assert await serve.terminate() == 0

    logs = serve.stdout() + serve.stderr()
    assert "callback_answer_retrying" in logs  # the run did go through the failures
    bot_secret = telegram.token.partition(":")[2]
    assert bot_secret not in logs
    assert WEBHOOK_TOKEN not in logs
