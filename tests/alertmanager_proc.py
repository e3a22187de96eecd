"""The real Alertmanager (Debian's prometheus-alertmanager) on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.procs import free_port

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")

needs_alertmanager = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"),
    reason="needs Debian's prometheus-alertmanager (.ci/run installs it)",
)


@asynccontextmanager
async def running_alertmanager(config: str, workdir: Path) -> AsyncIterator[str]:
    """Alertmanager with ``config`` (YAML), ready; yields its base URL, which is also the
    ``externalURL`` its webhooks carry."""
    assert BINARY is not None, "prometheus-alertmanager is not installed"
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(config)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        BINARY,
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={base}",
        "--cluster.listen-address=",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    if (await client.get(f"{base}/-/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("alertmanager did not become ready")
        yield base
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
