"""One demo: the stand-ins started, opsgate's serve path running against them, scenarios fired.

opsgate gets nothing but Settings: a bot token the Bot API stand-in knows, that stand-in's URL,
a kubeconfig for the simulated cluster, a policy file and a temporary SQLite database. Alerts
go in through its real Alertmanager webhook; people act through the Bot API stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
import yaml
from sqlalchemy import select

from opsgate.app import Runtime
from opsgate.demo.alertmanager import SilenceStandIn
from opsgate.demo.scenarios import APPROVE, BY_NAME, Scenario, seed_cluster, v4_payload
from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeMessage, FakeTelegram, FakeUser
from opsgate.serve import build_runtime
from opsgate.services.storage.models import Incident
from opsgate.settings import Settings

log = structlog.get_logger(__name__)

ONCALL_CHAT = -1001500000001
ALERTS_TOPIC = 7
SUBSCRIBERS_CHAT = -1001500000002
STARTUP_SECONDS = 30.0
WAIT_SECONDS = 20.0


@dataclass(frozen=True)
class Person:
    key: str
    label: str
    user: FakeUser


@dataclass(frozen=True)
class ChatInfo:
    id: int
    type: str
    title: str
    topic: str | None = None
    thread_id: int | None = None
    # A private chat belongs to the person whose chat with the bot it is.
    person: str | None = None


PEOPLE: tuple[Person, ...] = (
    Person("approver1", "Alice (approver 1)", FakeUser(2001, "alice", "Alice")),
    Person("approver2", "Bob (approver 2)", FakeUser(2002, "bob", "Bob")),
    Person("viewer", "Vic (viewer)", FakeUser(2009, "vic", "Vic")),
)
PERSON = {person.key: person for person in PEOPLE}


def policy_document() -> dict[str, Any]:
    """Alice and Bob may approve anything; Vic may only look. Critical needs two of them."""
    return {
        "roles": {
            "sre": {
                "namespaces": ["*"],
                "operations": ["*"],
                "risk_levels": ["low", "medium", "high", "critical"],
                "alerts": ["silence", "ack"],
            },
            "viewer": {"namespaces": [], "operations": [], "risk_levels": []},
        },
        "users": [
            {"id": PERSON["approver1"].user.id, "name": "alice", "roles": ["sre"]},
            {"id": PERSON["approver2"].user.id, "name": "bob", "roles": ["sre"]},
            {"id": PERSON["viewer"].user.id, "name": "vic", "roles": ["viewer"]},
        ],
        "quorum": {"low": 1, "medium": 1, "high": 1, "critical": 2},
        "result_subscribers": [SUBSCRIBERS_CHAT],
    }


class DemoSession:
    """``async with DemoSession(workdir) as demo``: everything up, on loopback only."""

    def __init__(self, workdir: Path, *, resolve_after: float = 6.0) -> None:
        self.workdir = workdir
        self.resolve_after = resolve_after
        self.telegram = FakeTelegram(token=f"7000001:{secrets.token_urlsafe(24)}")
        self.kube = FakeKube(token=secrets.token_urlsafe(24))
        self.alertmanager = SilenceStandIn()
        self.webhook_token = secrets.token_urlsafe(24)
        self.runtime: Runtime | None = None
        self.chats: tuple[ChatInfo, ...] = ()
        self.fired: list[str] = []  # scenario names, in the order they were fired
        self._keys = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DemoSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.telegram.start()
        await self.kube.start()
        await self.alertmanager.start()
        self._arrange_chats()
        seed_cluster(self.kube)
        self.runtime = await build_runtime(self.settings())
        self._task = asyncio.create_task(self.runtime.run(), name="opsgate")
        started = asyncio.create_task(self.runtime.started.wait())
        done, _ = await asyncio.wait(
            {started, self._task}, timeout=STARTUP_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        if self._task in done:
            started.cancel()
            self._task.result()
        if started not in done:
            raise RuntimeError("opsgate did not start")
        self._http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.runtime.port}",
            headers={"Authorization": f"Bearer {self.webhook_token}"},
            timeout=10,
        )

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        if self.runtime is not None and self._task is not None:
            self.runtime.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 30)
        await self.alertmanager.stop()
        await self.kube.stop()
        await self.telegram.stop()

    @property
    def done(self) -> asyncio.Task[None] | None:
        """opsgate's own task: it ends only when opsgate stops (or fails)."""
        return self._task

    def settings(self) -> Settings:
        policy_file = self.workdir / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy_document(), sort_keys=False))
        kubeconfig = self.kube.write_kubeconfig(self.workdir / "kubeconfig")
        # Everything opsgate reads is given here, so OPSGATE_* variables of the shell that
        # started the demo (a real bot's, a real cluster's) never reach it.
        return Settings(
            telegram_token=self.telegram.token,
            telegram_api_url=self.telegram.root_url,
            telegram_webhook_url=None,
            alert_chat_id=ONCALL_CHAT,
            alert_thread_id=ALERTS_TOPIC,
            database_url=f"sqlite+aiosqlite:///{self.workdir / 'opsgate.db'}",
            redis_url=None,
            http_host="127.0.0.1",
            http_port=0,
            webhook_token=self.webhook_token,
            policy_file=policy_file,
            kubeconfig=str(kubeconfig),
            kube_context=None,
            alertmanager_url=self.alertmanager.url,
            export_dir=None,
            instance_id="opsgate-demo",
            kube_request_timeout=5.0,
            retry_max=2,
            retry_delay_seconds=1.5,
            job_poll_interval=0.1,
            approval_sweep_seconds=1.0,
            verify_poll_seconds=0.5,
            verify_timeout_seconds=30.0,
            # Telegram allows a bot about one message a second in a chat and 20 a minute in a
            # group; the Bot API stand-in sets no limit, and a demo that plays several incidents
            # a minute should not make its audience wait for each edit of a card.
            telegram_chat_rate_per_second=5,
            telegram_group_rate_per_minute=600,
            log_format="console",
            log_level="warning",
        )

    def _arrange_chats(self) -> None:
        telegram = self.telegram
        telegram.add_chat(ONCALL_CHAT, title="SRE on-call", is_forum=True)
        telegram.add_topic(ONCALL_CHAT, ALERTS_TOPIC, "🚨 Alerts")
        telegram.add_chat(SUBSCRIBERS_CHAT, title="Result subscribers")
        chats = [
            ChatInfo(ONCALL_CHAT, "supergroup", "SRE on-call", "🚨 Alerts", ALERTS_TOPIC),
            ChatInfo(SUBSCRIBERS_CHAT, "supergroup", "Result subscribers"),
        ]
        for person in PEOPLE:
            telegram.add_chat(person.user.id, type="private", title=person.user.first_name)
            chats.append(ChatInfo(person.user.id, "private", "opsgate bot", person=person.key))
        self.chats = tuple(chats)

    # -- what people do -------------------------------------------------------------------------

    def tap(self, person: str, chat_id: int, message_id: int, data: str) -> str:
        return self.telegram.tap(chat_id, message_id, PERSON[person].user, data)

    def say(
        self, person: str, chat_id: int, text: str, *, reply_to: int | None = None
    ) -> FakeMessage:
        """``person`` writes ``text``; in the on-call group, in the alerts topic."""
        thread = ALERTS_TOPIC if chat_id == ONCALL_CHAT and reply_to is None else None
        return self.telegram.send_text(
            chat_id,
            PERSON[person].user,
            text,
            reply_to_message_id=reply_to,
            message_thread_id=thread,
        )

    # -- scenarios ------------------------------------------------------------------------------

    async def fire(self, name: str) -> FakeMessage:
        """Fire scenario ``name``; returns its card once Telegram shows it."""
        scenario = BY_NAME[name]
        self.fired.append(name)
        key = f"{name}-{next(self._keys)}"
        if scenario.learned:
            await self._learn(scenario, key)
            key = f"{name}-{next(self._keys)}"
        if scenario.fault is not None:
            fault = scenario.fault
            self.kube.inject("PATCH", fault.path, fault.status, count=fault.count, dry_run=False)
        card = await self._post_and_wait_card(scenario, key, with_action=not scenario.learned)
        if scenario.resolves_early:
            self._in_background(self._resolve_later(scenario, key))
        return card

    def start_scenario(self, name: str) -> None:
        """Fire scenario ``name`` without waiting: the page shows it happen."""
        self._in_background(self._fire_quietly(name))

    async def _fire_quietly(self, name: str) -> None:
        await self.fire(name)

    async def play(self, name: str) -> list[str]:
        """Fire scenario ``name`` and make its people's moves, as headless mode does; returns
        what happened, one line a step (the transcript shows only each message's last state)."""
        scenario = BY_NAME[name]
        card = await self.fire(name)
        steps = [f"▶ alert {scenario.alert.alertname} fired; card #{card.message_id} posted"]
        # The card's lines change as it is edited; what it proposed first is worth keeping.
        steps += [
            f"  card: {line}" for line in card.plain_text.splitlines() if "playbook #" in line
        ]
        for move in scenario.moves:
            who = f"@{PERSON[move.person].user.username}"
            if move.button is not None:
                text, data = _button(card, move.button)
                self.tap(move.person, ONCALL_CHAT, card.message_id, data)
                steps.append(f"▶ {who} taps [{text}]")
                if move.wait is not None:
                    await self._wait_for_text(card.message_id, move.wait)
            elif move.text is not None:
                reply_to = card.message_id if move.on_card else None
                asked = self.say(move.person, ONCALL_CHAT, move.text, reply_to=reply_to)
                where = " in reply to the card" if move.on_card else ""
                steps.append(f"▶ {who} writes {move.text!r}{where}")
                if move.wait is not None:
                    await self._wait_reply_with(asked, move.wait)
            if move.wait is not None:
                steps.append(f"  … and sees {move.wait!r}")
        if scenario.resolves_early:
            steps.append("▶ the alert resolves")
            await self._wait_for_text(card.message_id, "RESOLVED")
        await self._settle()
        return steps

    async def _learn(self, scenario: Scenario, key: str) -> None:
        """The first incident of a learned playbook: fixed, verified, resolved, approved."""
        card = await self._post_and_wait_card(scenario, key, with_action=True)
        self.tap("approver1", ONCALL_CHAT, card.message_id, _button(card, APPROVE)[1])
        await self._wait_for_text(card.message_id, "verified")
        await self._post(scenario, key, status="resolved")
        await self._wait_for_text(card.message_id, "RESOLVED")
        # Until the playbook is drafted and the verification is learned too: the card of the
        # second firing shows the record ("worked 1/1"), and the learning job that counts the
        # verification may run after the card already says "verified".
        for _ in range(100):
            listing = self.say("approver2", ONCALL_CHAT, "/playbooks")
            answer = await self._wait_reply(listing.message_id)
            if "#1 draft" in answer.plain_text and "worked 1/1" in answer.plain_text:
                break
            await asyncio.sleep(0.2)
        approve = self.say("approver2", ONCALL_CHAT, "/playbook approve 1")
        await self._wait_reply(approve.message_id)

    async def _resolve_later(self, scenario: Scenario, key: str) -> None:
        await asyncio.sleep(self.resolve_after)
        await self._post(scenario, key, status="resolved")

    async def _post_and_wait_card(
        self, scenario: Scenario, key: str, *, with_action: bool
    ) -> FakeMessage:
        before = len(self.cards())
        await self._post(scenario, key, with_action=with_action)
        await self.telegram.wait_for(lambda: len(self.cards()) > before, WAIT_SECONDS)
        card = self.cards()[before]
        await self._wait_stored(card)
        return card

    async def _wait_stored(self, card: FakeMessage) -> None:
        """Until opsgate has stored where its card is: a person is quick, but not that quick,
        and a tap before it would only show as the card being adopted in the timeline."""
        assert self.runtime is not None
        db = self.runtime.og.db
        for _ in range(int(WAIT_SECONDS / 0.05)):
            async with db.read() as session:
                stored = await session.scalar(
                    select(Incident.id).where(Incident.message_id == card.message_id)
                )
            if stored is not None:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"card {card.message_id} was never stored")

    async def _post(
        self, scenario: Scenario, key: str, *, status: str = "firing", with_action: bool = True
    ) -> None:
        assert self._http is not None, "the demo is not started"
        payload = v4_payload(
            scenario.alert,
            key=key,
            external_url=self.alertmanager.url,
            status=status,
            with_action=with_action,
        )
        response = await self._http.post("/webhook/alertmanager", json=payload)
        response.raise_for_status()
        log.info("demo_alert_posted", scenario=scenario.name, status=status)

    def _in_background(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("demo_step_failed", error=repr(task.exception()))

    # -- reading the chat -----------------------------------------------------------------------

    def cards(self) -> list[FakeMessage]:
        return [
            m
            for m in self.telegram.messages(ONCALL_CHAT)
            if m.from_bot and m.reply_to_message_id is None and "Incident" in m.plain_text
        ]

    async def _wait_for_text(self, card_id: int, needle: str) -> None:
        """``needle`` on the card itself or in a bot reply threaded under it."""

        def shown() -> bool:
            if needle in self.telegram.message(ONCALL_CHAT, card_id).plain_text:
                return True
            return any(
                needle in m.plain_text
                for m in self.telegram.messages(ONCALL_CHAT)
                if m.from_bot and m.reply_to_message_id == card_id
            )

        await self.telegram.wait_for(shown, WAIT_SECONDS)

    async def _wait_reply(self, message_id: int) -> FakeMessage:
        def replies() -> list[FakeMessage]:
            return [
                m
                for m in self.telegram.messages(ONCALL_CHAT)
                if m.from_bot and m.reply_to_message_id == message_id
            ]

        await self.telegram.wait_for(lambda: bool(replies()), WAIT_SECONDS)
        return replies()[0]

    async def _wait_reply_with(self, asked: FakeMessage, needle: str) -> None:
        """Ask again until the answer shows ``needle``: the timeline's last step is written
        just after the reply that the previous move waited for."""
        person = next(p.key for p in PEOPLE if p.user == asked.sender)
        for _ in range(25):
            answer = await self._wait_reply(asked.message_id)
            if needle in answer.plain_text:
                return
            await asyncio.sleep(0.2)
            asked = self.say(person, ONCALL_CHAT, asked.text, reply_to=asked.reply_to_message_id)
        raise TimeoutError(f"{asked.text!r} never answered with {needle!r}")

    async def _settle(self) -> None:
        """Let the result fan-out to the subscribers' group finish before the transcript."""
        cards = {card.message_id for card in self.cards()}
        results = [
            m
            for m in self.telegram.messages(ONCALL_CHAT)
            if m.from_bot and m.reply_to_message_id in cards
        ]
        if not results:
            return
        with contextlib.suppress(TimeoutError):
            await self.telegram.wait_for(
                lambda: any(m.from_bot for m in self.telegram.messages(SUBSCRIBERS_CHAT)), 3.0
            )

    def transcript(self) -> str:
        """Every chat, every message in order: who, the text as people see it, the buttons."""
        lines: list[str] = []
        for chat in self.chats:
            messages = self.telegram.messages(chat.id)
            if not messages:
                continue
            where = chat.title
            if chat.person is not None:
                where = f"{PERSON[chat.person].user.first_name} ↔ {chat.title}"
            elif chat.topic is not None:
                where = f"{chat.title} / {chat.topic}"
            lines.append(f"=== {where}")
            for message in messages:
                who = "bot" if message.from_bot else f"@{message.sender.username}"
                reply = f" (reply to #{message.reply_to_message_id})"
                head = f"#{message.message_id} {who}{reply if message.reply_to_message_id else ''}"
                edited = f" [edited {message.edit_count}x]" if message.edit_count else ""
                lines.append(f"{head}{edited}:")
                lines.extend(f"    {line}" for line in message.plain_text.splitlines())
                rows = message.reply_markup["inline_keyboard"] if message.reply_markup else []
                for row in rows:
                    lines.append("    " + " ".join(f"[{button['text']}]" for button in row))
            lines.append("")
        return "\n".join(lines)


def _button(message: FakeMessage, prefix: str) -> tuple[str, str]:
    """(text, callback data) of the message's first button whose data starts with ``prefix``."""
    for text, data in message.buttons:
        if data is not None and data.startswith(prefix):
            return text, data
    raise AssertionError(
        f"message {message.message_id} has no {prefix!r} button: {message.buttons}"
    )
