"""Real ``opsgate`` child processes for tests that race, kill or restart whole processes.

A test builds the environment (``serve_env`` for ``opsgate serve`` against the loopback stand-ins
running in the pytest process), starts children through an ``OpsgateProcesses`` group, and reads
what each child printed from files under the test's ``tmp_path``. The group kills whatever is
still running when the test ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.telegram_api import FakeTelegram
from tests.e2e.rig import stand_in_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT_TAIL_CHARS = 4000


def free_port() -> int:
    """A port nobody listens on right now; the child binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Mapping[str, object]) -> dict[str, str]:
    """``{"job_poll_interval": 0.05}`` -> ``{"OPSGATE_JOB_POLL_INTERVAL": "0.05"}``."""
    return {f"OPSGATE_{name.upper()}": str(value) for name, value in settings.items()}


def serve_env(
    telegram: FakeTelegram,
    kube: FakeKube,
    database_url: str,
    workdir: Path,
    overrides: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """What ``opsgate serve`` needs to run against the stand-ins, as the e2e rig configures it.

    The HTTP port is left out: ``OpsgateProcesses.serve`` gives every replica its own.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {
        **stand_in_settings(telegram, kube, database_url, workdir),
        "log_format": "json",
        **(overrides or {}),
    }
    return settings_env(settings)


class OpsgateProcess:
    """One ``python -m opsgate.cli <command>`` child; its output goes to two files."""

    def __init__(
        self,
        name: str,
        process: asyncio.subprocess.Process,
        stdout: Path,
        stderr: Path,
        port: int | None,
    ) -> None:
        self.name = name
        self.process = process
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.port = port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def base_url(self) -> str:
        assert self.port is not None, f"{self.name} does not serve HTTP"
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        """Name, exit status and the end of both streams: what a failing assertion should show."""
        return (
            f"{self.name} (pid {self.pid}, returncode {self.returncode})\n"
            f"--- stdout ---\n{self.stdout()[-OUTPUT_TAIL_CHARS:]}\n"
            f"--- stderr ---\n{self.stderr()[-OUTPUT_TAIL_CHARS:]}"
        )

    async def wait(self, timeout: float = 60) -> int:
        """The exit status, once the child has exited by itself."""
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"still running after {timeout}s: {self.describe()}") from None

    async def wait_healthy(self, timeout: float = 60) -> None:
        """Return once ``GET /healthz`` answers 200; fail at once if the child exits first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while True:
                if self.returncode is not None:
                    raise AssertionError(f"exited before it was healthy: {self.describe()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                if loop.time() > deadline:
                    raise AssertionError(f"not healthy after {timeout}s: {self.describe()}")
                await asyncio.sleep(0.1)

    def kill_9(self) -> None:
        """SIGKILL: the process gets no chance to clean up, as in an OOM kill or a node loss."""
        if self.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as Kubernetes sends it, then the exit status; SIGKILL and fail if it hangs."""
        if self.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.kill_9()
            await self.process.wait()
            raise AssertionError(f"ignored SIGTERM for {timeout}s: {self.describe()}") from None


class OpsgateProcesses:
    """Starts children and owns them: ``close`` kills and reaps every one still running."""

    def __init__(self, workdir: Path, *, python: str = sys.executable) -> None:
        self.workdir = workdir
        self.python = python  # the interpreter of the children: a bench may give another venv's
        self.children: list[OpsgateProcess] = []
        self._numbers = itertools.count(1)

    async def serve(
        self, env: Mapping[str, str], *, name: str | None = None, port: int | None = None
    ) -> OpsgateProcess:
        """``opsgate serve`` on its own free port (``port`` to reuse one, e.g. after a kill)."""
        port = port if port is not None else free_port()
        return await self.start(
            "serve", {**env, "OPSGATE_HTTP_PORT": str(port)}, name=name, port=port
        )

    async def migrate(self, env: Mapping[str, str], *, name: str | None = None) -> OpsgateProcess:
        return await self.start("migrate", env, name=name)

    async def start(
        self,
        command: str,
        env: Mapping[str, str],
        *,
        name: str | None = None,
        port: int | None = None,
    ) -> OpsgateProcess:
        name = name or f"{command}-{next(self._numbers)}"
        logs = self.workdir / "procs"
        logs.mkdir(parents=True, exist_ok=True)
        stdout, stderr = logs / f"{name}.stdout", logs / f"{name}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "opsgate.cli",
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_child_env(env),
                cwd=self.workdir,
            )
        child = OpsgateProcess(name, process, stdout, stderr, port)
        self.children.append(child)
        return child

    async def close(self) -> None:
        for child in self.children:
            child.kill_9()
        await asyncio.gather(*(child.process.wait() for child in self.children))
        self.children.clear()


def _child_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without its own OPSGATE_* values, plus the given ones.

    PYTHONPATH puts this checkout first, so the child runs the code under test even when the
    interpreter has another copy of opsgate installed.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPSGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(settings)
    return env
