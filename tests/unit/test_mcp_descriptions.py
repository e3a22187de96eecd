"""The image runs with PYTHONOPTIMIZE=2, which drops docstrings: an MCP tool described only by its
docstring would reach agents with an empty description."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LIST_TOOLS = """
import asyncio
from opsgate.handlers.mcp_server import build_mcp

async def main() -> None:
    for tool in await build_mcp(None).list_tools():
        print(tool.name, len(tool.description or ""))

asyncio.run(main())
"""


def test_every_tool_is_described_under_the_images_optimize_level() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIST_TOOLS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONOPTIMIZE": "2"},
    )
    lengths = dict(line.split() for line in done.stdout.splitlines())
    assert len(lengths) == 7, done.stdout
    assert [name for name, length in lengths.items() if int(length) < 20] == []
