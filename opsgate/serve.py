"""What ``opsgate serve`` runs, from Settings to a stopped process; ``opsgate demo`` runs it too."""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog

from opsgate.app import Runtime, build_app, load_kube_client
from opsgate.services.policy import Policy
from opsgate.services.policy_source import PolicySource
from opsgate.settings import Settings

log = structlog.get_logger(__name__)


async def build_runtime(settings: Settings) -> Runtime:
    """The policy file, the Kubernetes client and the app, as ``opsgate serve`` builds them."""
    policy = Policy.from_file(settings.policy_file) if settings.policy_file else Policy.empty()
    kube = await load_kube_client(settings)
    return Runtime(build_app(settings, policy=PolicySource(policy), kube=kube))


def handle_signals(runtime: Runtime) -> None:
    """SIGTERM and SIGINT stop the runtime cleanly; SIGHUP reloads the policy file.

    Kubernetes stops a pod with SIGTERM. uvicorn catches it while it serves, but stops only the
    HTTP server and then raises the signal again; with Python's default action that kills the
    process before polling, the job runner and the database pool are shut down. With a loop
    handler the second delivery lands here too, so the handler must be idempotent.
    """
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop_on_signal, runtime, signum)
    loop.add_signal_handler(signal.SIGHUP, _reload_on_signal, runtime)


async def serve(settings: Settings) -> None:
    runtime = await build_runtime(settings)
    freeze_startup_heap()
    handle_signals(runtime)
    await runtime.run()


def freeze_startup_heap() -> None:
    """Leave what start-up built (modules, the app) out of every later garbage collection.

    It lives as long as the process, yet each full collection walks all of it again: under a
    burst of new alert groups that was ~0.1 ms of CPU per group, ~0.04 ms frozen. Start-up's
    own garbage is collected first, or it would be kept for good.
    """
    gc.collect()
    gc.freeze()


def _stop_on_signal(runtime: Runtime, signum: signal.Signals) -> None:
    if not runtime.stop.is_set():
        log.info("stop_signal_received", signal=signum.name)
        runtime.stop.set()


def _reload_on_signal(runtime: Runtime) -> None:
    log.info("reload_signal_received", signal="SIGHUP")
    runtime.request_reload()
