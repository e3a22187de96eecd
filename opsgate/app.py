"""The composition root: every dependency is built here and passed in, nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import ssl
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import kubernetes_asyncio
import structlog
import uvicorn
import yaml
from fastapi import FastAPI
from kubernetes_asyncio import client as k8s
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from telegram import Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application, ApplicationBuilder

import opsgate
from opsgate.bot.bot_api_client import AiohttpRequest
from opsgate.bot.outbound import OutboundScheduler
from opsgate.bot.polled_updates import ConfirmingBot, FreshUpdatesRequest, UpdateReceipts
from opsgate.bot.render_commands import COMMANDS
from opsgate.bot.send_budget import FloodLimits, SendBudget, redis_storage
from opsgate.bot.sender import TelegramSender
from opsgate.handlers.agent_routes import agent_router
from opsgate.handlers.answers_first import AnswersFirst
from opsgate.handlers.card_buttons import CardButtons
from opsgate.handlers.chat_members import ChatMembers
from opsgate.handlers.commands import ChatCommands
from opsgate.handlers.feedback_buttons import FeedbackButtons
from opsgate.handlers.http_guards import RequestGate
from opsgate.handlers.http_routes import (
    ALERTMANAGER_PATH,
    alertmanager_webhook,
    create_api,
    health_router,
    ingest_router,
    policy_router,
    telegram_webhook_router,
)
from opsgate.handlers.mcp_door import LazyMcp, McpDoor
from opsgate.handlers.openapi_doc import document
from opsgate.handlers.response_buttons import ResponseButtons
from opsgate.handlers.telegram_updates import ALLOWED_UPDATES, register
from opsgate.handlers.undo_buttons import UndoButtons
from opsgate.metrics import Metrics
from opsgate.services import jobs
from opsgate.services.acks import AckService
from opsgate.services.agent_gateway import AgentGateway
from opsgate.services.alertmanager_api import AlertmanagerClient
from opsgate.services.approvals import DECISION_OUTCOMES, ApprovalService, RetryPolicy
from opsgate.services.card_quota import CardQuota
from opsgate.services.cards import REFUSAL_REASONS, CardPublisher
from opsgate.services.chat import ChatError, ChatTarget, ChatUnavailable
from opsgate.services.chats import ChatDirectory
from opsgate.services.digests import DigestPublisher
from opsgate.services.execution import FINAL_STATES, ExecutionService
from opsgate.services.fanout import ResultFanout
from opsgate.services.finetune_export import export_finetune
from opsgate.services.health import HealthService, kube_version_check
from opsgate.services.incidents import IncidentService
from opsgate.services.job_kinds import JobKind
from opsgate.services.job_lanes import ACTIONS_LANE, CHAT_LANE, lanes
from opsgate.services.jobs import JobHandler, JobRunner, Periodic
from opsgate.services.knowledge import KnowledgeService
from opsgate.services.kube_client import KubeClient
from opsgate.services.kube_executor import KubeExecutor
from opsgate.services.leadership import Leadership
from opsgate.services.learning import LearningService
from opsgate.services.notifiers import PolicyNotifiers
from opsgate.services.plans import PlanService
from opsgate.services.playbooks import PlaybookService
from opsgate.services.policy_reload import PolicyReloader, ReloadRefused
from opsgate.services.policy_source import PolicySource
from opsgate.services.process_locks import LockUnavailable, ProcessLock, process_lock
from opsgate.services.queries import IncidentQueries
from opsgate.services.routing import Router
from opsgate.services.silences import SilenceService
from opsgate.services.storage.db import Database, describe_database_error
from opsgate.services.storage.schema_version import schema_is_current
from opsgate.services.telegram_inbox import UpdateInbox
from opsgate.services.undo import UndoService
from opsgate.services.verification import OUTCOMES as VERIFICATION_OUTCOMES
from opsgate.services.verification import VerificationService
from opsgate.settings import Settings, SettingsError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

log = structlog.get_logger(__name__)

# A scrape waits this long for the queue figures; a slow database shows as a failed scrape.
QUEUE_STATS_TIMEOUT = 5.0
PRUNE_SECONDS = 3600.0
# Handling an update takes well under a second; a short lease lets another replica answer a
# dead one's taps inside Telegram's 15 s window.
UPDATE_LEASE_SECONDS = 5.0
# How soon a replica notices that the polling leader is gone (or that it lost the lock itself).
POLLING_LEADER_CHECK_SECONDS = 2.0
POLLING_LOCK = "telegram-polling"
# Bot API calls in flight at once: PTB's own default, above the updates handled at a time plus
# the outbound scheduler's sends by default.
BOT_API_CONNECTIONS = 256
MIGRATE_MODULE = "opsgate.migrate"
PACKAGE_ROOT = Path(opsgate.__file__).resolve().parents[1]
# Where Kubernetes mounts a pod's service account (kubernetes-asyncio's incluster_config).
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


async def load_kube_client(settings: Settings) -> KubeClient:
    """kubeconfig (``KUBECONFIG`` or ~/.kube/config), else the in-cluster service account.

    Checked here, so that serve refuses to start without them; the library loads them when the
    client is first used (kube_client), and says then what it still finds wrong.
    """
    explicit = settings.kubeconfig or os.environ.get("KUBECONFIG")
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not explicit:
        problem = await asyncio.to_thread(_service_account_problem)
        if problem is not None:
            raise SettingsError(f"no Kubernetes access in the cluster: {problem}")
        return KubeClient(_in_cluster_client)
    setting = "OPSGATE_KUBECONFIG" if settings.kubeconfig else "KUBECONFIG"
    path = explicit or "~/.kube/config"
    where = f"{setting}={explicit}" if explicit else path
    problem = await asyncio.to_thread(_kubeconfig_problem, path, settings.kube_context)
    if problem is not None:
        hint = "" if explicit else " (set KUBECONFIG or run in a cluster)"
        raise SettingsError(f"no Kubernetes access: {where}: {problem}{hint}")

    async def connect() -> ApiClient:
        cfg = k8s.Configuration()
        try:
            await kubernetes_asyncio.config.load_kube_config(
                config_file=path, context=settings.kube_context, client_configuration=cfg
            )
        except (kubernetes_asyncio.config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise SettingsError(f"no Kubernetes access: {where}: {exc}") from None
        return k8s.ApiClient(configuration=cfg)

    return KubeClient(connect)


async def _in_cluster_client() -> ApiClient:
    cfg = k8s.Configuration()
    try:
        load_incluster = kubernetes_asyncio.config.load_incluster_config
        load_incluster(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except (kubernetes_asyncio.config.ConfigException, OSError) as exc:
        raise SettingsError(f"no Kubernetes access in the cluster: {exc}") from None
    return k8s.ApiClient(configuration=cfg)


def _service_account_problem() -> str | None:
    """What kubernetes-asyncio's in-cluster loader would refuse, found without loading it."""
    if not os.environ.get("KUBERNETES_SERVICE_PORT"):
        return "KUBERNETES_SERVICE_PORT is not set"
    for name in ("token", "ca.crt"):
        try:
            if not (SERVICE_ACCOUNT / name).read_bytes():
                return f"{SERVICE_ACCOUNT / name} is empty"
        except OSError as exc:
            return f"cannot read {SERVICE_ACCOUNT / name}: {exc.strerror}"
    return None


def _kubeconfig_problem(path: str, context: str | None) -> str | None:
    """What kubernetes-asyncio would say in a traceback or a vague line, said plainly."""
    try:
        data = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "the file does not exist"
    except OSError as exc:
        return f"cannot read the file: {exc.strerror}"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        return f"{line}not valid YAML: {getattr(exc, 'problem', None) or exc}"
    if not isinstance(data, dict):
        return "not a kubeconfig (expected a mapping with clusters, users and contexts)"
    names = [c.get("name") for c in data.get("contexts") or [] if isinstance(c, dict)]
    wanted = context or data.get("current-context")
    if not wanted:
        return "no current-context is set (set OPSGATE_KUBE_CONTEXT, or kubectl config use-context)"
    if wanted not in names:
        known = ", ".join(str(n) for n in names) or "none"
        return f"context {wanted!r} is not defined (contexts: {known})"
    return None


@dataclass
class OpsGate:
    settings: Settings
    db: Database
    metrics: Metrics
    telegram: Application  # type: ignore[type-arg]
    sender: TelegramSender
    chats: ChatDirectory
    kube: KubeClient
    http: httpx.AsyncClient
    # One per lane (see JOB_LANES), and the updates' own when updates come by webhook.
    runners: tuple[JobRunner, ...]
    api: FastAPI
    # What uvicorn serves: the API behind the token and body-size gate.
    http_app: RequestGate
    webhook_secret: str | None
    reloader: PolicyReloader
    # The MCP server behind /mcp, built on first use; it runs while the HTTP server does.
    mcp: LazyMcp
    # The polled votes not yet durable (see bot.polled_updates).
    receipts: UpdateReceipts
    routed_chats: tuple[int, ...] = ()


def build_telegram(
    settings: Settings,
    tls: ssl.SSLContext | None = None,
    *,
    receipts: UpdateReceipts | None = None,
) -> Application:  # type: ignore[type-arg]
    """PTB's application; its two HTTP clients use ``tls`` (see build_app) when given. Polled
    votes are confirmed to Telegram once ``receipts`` says they are durable."""
    bot = ConfirmingBot(
        settings.telegram_token.get_secret_value(),
        base_url=settings.telegram_base_url,
        # The bot's own calls; getUpdates has its own pool, and PTB's long-poll read margin.
        request=AiohttpRequest(
            connections=BOT_API_CONNECTIONS,
            read_timeout=settings.telegram_read_timeout,
            connect_timeout=settings.telegram_connect_timeout,
            tls=tls,
        ),
        get_updates_request=FreshUpdatesRequest(
            connect_timeout=settings.telegram_connect_timeout,
            tls=tls,
        ),
        receipts=receipts or UpdateReceipts(),
    )
    builder: ApplicationBuilder = Application.builder().bot(bot)  # type: ignore[type-arg]
    if settings.telegram_webhook_url is not None:
        builder = builder.updater(None)
    else:
        # Polled updates are handled side by side: a long answer never holds up a tap.
        builder = builder.concurrent_updates(settings.update_concurrency)
    return builder.build()


def build_outbound(settings: Settings) -> OutboundScheduler:
    """Telegram's flood limits, per bot token: in Redis when configured, so replicas share them."""
    limits = FloodLimits.telegram(
        chat_per_second=settings.telegram_chat_rate_per_second,
        group_per_minute=settings.telegram_group_rate_per_minute,
        overall_per_second=settings.telegram_overall_rate_per_second,
    )
    storage = redis_storage(settings.redis_url) if settings.redis_url else None
    bot_id = settings.telegram_token.get_secret_value().partition(":")[0]
    return OutboundScheduler(SendBudget(limits, storage=storage, scope=bot_id))


def open_database(url: str) -> Database:
    try:
        return Database(url)
    except (SQLAlchemyError, ImportError) as exc:
        raise SettingsError(
            f"OPSGATE_DATABASE_URL is invalid: {describe_database_error(exc)}"
        ) from None


async def migrate_database(db: Database) -> None:
    """Bring the schema to head, in a child process (``python -m opsgate.migrate``) when it is
    behind: Alembic and Mako then never load into this process. An unusable database is
    reported in one line naming the setting, the child's own."""
    if await schema_is_current(db):
        return
    if make_url(db.url).database in (None, "", ":memory:") and db.is_sqlite:
        raise SettingsError("OPSGATE_DATABASE_URL: an in-memory SQLite database is not shared")
    # The child runs the same opsgate as this process, wherever that was imported from.
    path = [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "OPSGATE_DATABASE_URL": db.url,
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        MIGRATE_MODULE,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await child.communicate()
    said = [line.removeprefix("opsgate: ") for line in err.decode(errors="replace").splitlines()]
    if child.returncode == 2:
        raise SettingsError("\n".join(said))
    if child.returncode != 0:
        tail = said[-1] if said else "no output"
        raise RuntimeError(f"{MIGRATE_MODULE} failed (exit {child.returncode}): {tail}")
    log.info("database_migrated", dialect=db.engine.dialect.name)


def build_app(settings: Settings, *, policy: PolicySource, kube: KubeClient) -> OpsGate:
    """Wire opsgate: every service gets what it needs here, and nowhere else.

    Services hold ``policy``, the holder, and read the policy in force at each decision.
    """
    metrics = Metrics(version=version("opsgate"))
    metrics.start_at_zero(
        job_kinds=[kind.value for kind in JobKind if kind is not JobKind.PERIODIC],
        approval_outcomes=DECISION_OUTCOMES,
        verification_outcomes=VERIFICATION_OUTCOMES,
        execution_statuses=FINAL_STATES,
        card_refusals=REFUSAL_REASONS,
    )
    db = open_database(settings.database_url)
    # One TLS context for every HTTPS client here: each default one loads the CA bundle again,
    # ~1 MB of resident memory apiece.
    tls = httpx.create_ssl_context()
    receipts = UpdateReceipts()
    telegram = build_telegram(settings, tls, receipts=receipts)
    chats = ChatDirectory(db)
    sender = TelegramSender(
        telegram.bot, chats, on_error=metrics.telegram_error, outbound=build_outbound(settings)
    )
    http = httpx.AsyncClient(timeout=settings.notifier_timeout_seconds, verify=tls)

    approvals = ApprovalService(
        db,
        policy,
        ttl=timedelta(seconds=settings.approval_ttl_seconds),
        retry=RetryPolicy(settings.retry_max, settings.retry_delay_seconds),
        metrics=metrics,
    )
    router = Router(policy, ChatTarget(settings.alert_chat_id, settings.alert_thread_id))
    playbooks = PlaybookService(db)
    incidents = IncidentService(
        db,
        approvals,
        router=router,
        playbooks=playbooks,
        policy=policy,
    )
    executor = KubeExecutor(kube, settings.kube_request_timeout)
    verification = VerificationService(
        db,
        executor,
        deadline=timedelta(seconds=settings.verify_timeout_seconds),
        poll=timedelta(seconds=settings.verify_poll_seconds),
        alert_window=timedelta(seconds=settings.verify_alert_window_seconds)
        if settings.verify_alert_window_seconds
        else None,
        metrics=metrics,
    )
    plans = PlanService(
        db,
        executor,
        approvals,
        reads=settings.plan_reads,
        retry_seconds=settings.plan_retry_seconds,
    )
    execution = ExecutionService(
        db,
        executor,
        retry_after_cap=settings.retry_after_max_seconds,
        metrics=metrics,
    )
    knowledge = KnowledgeService(db)
    publisher = CardPublisher(
        db,
        sender,
        knowledge,
        quota=CardQuota(settings.cards_per_minute),
        metrics=metrics,
        policy=policy,
        card_bound=approvals.card_bound,
    )
    digests = DigestPublisher(db, sender, cards_per_minute=settings.cards_per_minute)
    fanout = ResultFanout(
        db,
        sender,
        PolicyNotifiers(policy, http),
        on_failure=metrics.notify_failed,
    )

    learning = LearningService(db)

    async def archive_stale_knowledge() -> None:
        await knowledge.archive_unreferenced(timedelta(days=settings.knowledge_decay_days))

    async def export_recent() -> None:
        """The scheduled fine-tune export: the last interval's decisions, one file a run."""
        assert settings.export_dir is not None
        now = datetime.now(UTC)
        out = settings.export_dir / f"finetune-{now:%Y%m%d}.jsonl"
        await export_finetune(db, now - timedelta(seconds=settings.export_interval_seconds), out)

    async def refresh_queue_gauges() -> None:
        # At each scrape, from the database: every replica reports the one shared queue.
        async with asyncio.timeout(QUEUE_STATS_TIMEOUT), db.read() as session:
            stats = await jobs.queue_stats(session)
        metrics.job_queue(stats.depth, stats.oldest_seconds)

    async def prune_jobs() -> None:
        await jobs.prune_finished(db, timedelta(seconds=settings.job_retention_seconds))

    periodic = {
        "expire_approvals": Periodic(settings.approval_sweep_seconds, approvals.expire_due),
        "archive_knowledge": Periodic(
            settings.knowledge_decay_check_seconds, archive_stale_knowledge
        ),
        "prune_jobs": Periodic(PRUNE_SECONDS, prune_jobs),
    }
    if settings.export_dir is not None:
        periodic["finetune_export"] = Periodic(settings.export_interval_seconds, export_recent)
    handlers: dict[JobKind, JobHandler] = {
        JobKind.EXECUTE: execution.run_job,
        JobKind.SYNC_CARD: publisher.sync_card,
        JobKind.PUBLISH_RESULT: publisher.publish_result,
        JobKind.DIGEST: digests.run_job,
        JobKind.NOTIFY: fanout.notify,
        JobKind.VERIFY: verification.run_job,
        JobKind.LEARN: learning.run_job,
        JobKind.KNOWLEDGE: knowledge.write_back,
        JobKind.EXTRACT_PLAYBOOK: playbooks.extract,
        JobKind.PLAN: plans.run_job,
    }
    runners = [
        JobRunner(
            db,
            lane_handlers,
            owner=settings.instance_id,
            lease_seconds=settings.job_lease_seconds,
            poll_interval=settings.job_poll_interval,
            concurrency=settings.chat_job_concurrency
            if lane == CHAT_LANE
            else settings.job_concurrency,
            periodic=periodic if lane == ACTIONS_LANE else None,
            name=lane,
            on_dead=metrics.job_dead,
        )
        for lane, lane_handlers in lanes(handlers).items()
    ]
    health = HealthService(
        db,
        chats,
        version=version("opsgate"),
        kube_check=kube_version_check(kube),
        last_alert=lambda: incidents.last_received_at,
    )
    # One order for every update handler: callback answers before votes and commands.
    answers_first = AnswersFirst()
    register(
        telegram,
        CardButtons(approvals, sender, metrics, receipts, answers_first),
        FeedbackButtons(learning, policy, sender),
        ChatCommands(
            IncidentQueries(db),
            health,
            knowledge,
            playbooks,
            policy,
            chats,
            sender,
            publisher,
            answers_first,
        ),
        ChatMembers(chats),
        ResponseButtons(
            SilenceService(
                db,
                AlertmanagerClient(http, settings.alertmanager_timeout_seconds),
                policy,
                alertmanager_url=settings.alertmanager_url,
            ),
            AckService(db, policy),
            sender,
        ),
        undo=UndoButtons(UndoService(db, approvals, policy), sender),
    )

    token = settings.webhook_token.get_secret_value() if settings.webhook_token else None
    reloader = PolicyReloader(policy, settings.policy_file, approvals)
    gateway = AgentGateway(db, incidents, policy, knowledge, IncidentQueries(db))
    mcp = LazyMcp(gateway)
    webhook = alertmanager_webhook(incidents, on_alert=metrics.alerts_received.inc)
    routers = [
        ingest_router(webhook, incidents, gateway),
        agent_router(gateway),
        policy_router(reloader),
        health_router(db, metrics.registry, before_scrape=refresh_queue_gauges),
    ]
    webhook_secret: str | None = None
    webhook_gate: tuple[str, str] | None = None
    if settings.telegram_webhook_url is not None:
        webhook_secret = (
            settings.telegram_webhook_secret.get_secret_value()
            if settings.telegram_webhook_secret
            else secrets.token_urlsafe(32)
        )

        async def process(data: dict[str, Any]) -> None:
            await telegram.process_update(Update.de_json(data, telegram.bot))

        inbox = UpdateInbox(db, process)
        # Updates have their own workers, so a tap never waits behind a slow execution.
        update_runner = JobRunner(
            db,
            {JobKind.TELEGRAM_UPDATE: inbox.run_job},
            owner=settings.instance_id,
            lease_seconds=min(settings.job_lease_seconds, UPDATE_LEASE_SECONDS),
            poll_interval=settings.job_poll_interval,
            concurrency=settings.update_concurrency,
            name="updates",
            on_dead=metrics.job_dead,
        )
        runners.append(update_runner)
        path = urlsplit(settings.telegram_webhook_url).path or "/telegram/webhook"
        routers.append(telegram_webhook_router(path, inbox.accept))
        webhook_gate = (path, webhook_secret)
    api = create_api(*routers)
    door = McpDoor(api, mcp, gateway)
    gate = RequestGate(
        door,
        token=token,
        telegram_webhook=webhook_gate,
        body_routes={ALERTMANAGER_PATH: webhook},
        agent_of=gateway.authenticate,
    )
    document(api, credentials=gate.credentials, door_paths=door.paths)
    return OpsGate(
        settings=settings,
        db=db,
        metrics=metrics,
        telegram=telegram,
        sender=sender,
        chats=chats,
        kube=kube,
        http=http,
        runners=tuple(runners),
        api=api,
        http_app=gate,
        mcp=mcp,
        webhook_secret=webhook_secret,
        reloader=reloader,
        receipts=receipts,
        routed_chats=router.chats(),
    )


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SettingsError(
            f"OPSGATE_HTTP_HOST/OPSGATE_HTTP_PORT: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    sock.listen(128)
    return sock


class Runtime:
    """Runs the HTTP server, the Telegram application and the job runner on one loop."""

    def __init__(self, og: OpsGate) -> None:
        self.og = og
        self.stop = asyncio.Event()
        self.started = asyncio.Event()
        self.port: int | None = None
        self.instance_lock: ProcessLock | None = None
        self.polling: Leadership | None = None
        self._reload_wanted = asyncio.Event()

    def request_reload(self) -> None:
        """Reload the policy file soon; safe in a signal handler (SIGHUP)."""
        self._reload_wanted.set()

    async def _reload_on_request(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            # A refusal is logged by the reloader; the old policy stays in force.
            with contextlib.suppress(ReloadRefused):
                await self.og.reloader.reload("signal")

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self._shutdown()

    async def _run(self) -> None:
        og = self.og
        settings = og.settings
        # Bound first, so a taken port stops the process before anything else starts.
        sock = listen(settings.http_host, settings.http_port)
        self.port = sock.getsockname()[1]
        await migrate_database(og.db)
        await self._claim_instance_id()
        try:
            await og.telegram.initialize()
        except InvalidToken:
            raise SettingsError("OPSGATE_TELEGRAM_TOKEN was refused by the Bot API") from None
        except NetworkError as exc:
            raise SettingsError(
                f"OPSGATE_TELEGRAM_API_URL: cannot reach {settings.telegram_api_url}: {exc}"
            ) from None
        await og.chats.load()
        await self._check_chats()
        await og.reloader.recheck_pending()
        try:
            await og.sender.set_commands(COMMANDS)
        except ChatError as exc:
            log.warning("set_commands_failed", error=str(exc))
        await og.telegram.start()
        if og.webhook_secret is not None:
            assert settings.telegram_webhook_url is not None
            await og.sender.set_webhook(
                settings.telegram_webhook_url, og.webhook_secret, list(ALLOWED_UPDATES)
            )
        server = uvicorn.Server(uvicorn.Config(og.http_app, log_config=None, lifespan="off"))
        # uvicorn runs no lifespan here: the MCP server's sessions run in a task of their own,
        # stopped after the HTTP server, and it never raises (a failure is the requests' 503).
        mcp_stop = asyncio.Event()
        mcp_task = asyncio.create_task(og.mcp.run(mcp_stop), name="mcp-server")
        runner_stop = asyncio.Event()
        runner_tasks = [
            asyncio.create_task(r.run(runner_stop), name=f"job-runner-{r.name}") for r in og.runners
        ]
        server_task = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
        stop_task = asyncio.create_task(self.stop.wait(), name="stop-signal")
        reload_task = asyncio.create_task(self._reload_on_request(), name="policy-reload")
        tasks = {server_task, stop_task, reload_task, *runner_tasks}
        polling_stop = asyncio.Event()
        if og.webhook_secret is None:
            self.polling = self._polling_leadership()
            tasks.add(asyncio.create_task(self.polling.run(polling_stop), name="polling-leader"))
        log.info(
            "opsgate_started",
            listen=f"http://{settings.http_host}:{self.port}",
            http_port=self.port,
            bot=f"@{og.telegram.bot.username}",
            database=og.db.engine.dialect.name,
            updates="webhook" if og.webhook_secret is not None else "polling",
            webhook=og.webhook_secret is not None,
            instance_id=settings.instance_id,
        )
        self.started.set()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop_task}:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            server.should_exit = True
            runner_stop.set()
            polling_stop.set()
            stop_task.cancel()
            reload_task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            mcp_stop.set()
            await mcp_task

    async def _check_chats(self) -> None:
        """A wrong alert chat would otherwise show only as a rejected first card."""
        settings = self.og.settings
        try:
            reason = await self.og.sender.check_chat(settings.alert_chat_id)
        except ChatUnavailable as exc:
            log.warning("chat_check_failed", chat_id=settings.alert_chat_id, error=str(exc))
            return
        if reason is not None:
            raise SettingsError(f"OPSGATE_ALERT_CHAT_ID={settings.alert_chat_id}: {reason}")
        for chat_id in self.og.routed_chats:
            if chat_id == settings.alert_chat_id:
                continue
            try:
                reason = await self.og.sender.check_chat(chat_id)
            except ChatUnavailable as exc:
                reason = str(exc)
            if reason is not None:
                log.warning("routed_chat_unusable", chat_id=chat_id, reason=reason)

    async def _claim_instance_id(self) -> None:
        """Two live processes under one id would each take the other's jobs as a dead
        incarnation's; the lock ends with the process, so a restart under the same id works."""
        instance_id = self.og.settings.instance_id
        lock = process_lock(self.og.db, f"instance:{instance_id}")
        try:
            held = await lock.try_acquire()
        except LockUnavailable as exc:
            raise SettingsError(f"OPSGATE_DATABASE_URL: cannot use the database: {exc}") from None
        if not held:
            raise SettingsError(
                f"OPSGATE_INSTANCE_ID={instance_id} is held by another running opsgate; "
                "give each replica its own"
            )
        self.instance_lock = lock

    def _polling_leadership(self) -> Leadership:
        """Telegram answers a second concurrent getUpdates with 409: one replica polls."""
        updater = self.og.telegram.updater
        assert updater is not None

        async def start_polling() -> None:
            await updater.start_polling(allowed_updates=ALLOWED_UPDATES)

        async def stop_polling() -> None:
            if updater.running:
                await updater.stop()
            self.og.receipts.forget()

        return Leadership(
            process_lock(self.og.db, POLLING_LOCK),
            on_elected=start_polling,
            on_deposed=stop_polling,
            interval=POLLING_LEADER_CHECK_SECONDS,
        )

    async def _shutdown(self) -> None:
        og = self.og
        if og.telegram.updater is not None and og.telegram.updater.running:
            await og.telegram.updater.stop()
        if og.telegram.running:
            await og.telegram.stop()
        await og.sender.close()
        await og.telegram.shutdown()
        with contextlib.suppress(Exception):
            await og.kube.close()
        await og.http.aclose()
        if self.instance_lock is not None:
            await self.instance_lock.release()
        await og.db.dispose()
        log.info("opsgate_stopped")
