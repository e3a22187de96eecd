"""The HTTP client under every Bot API call does no import work per request.

httpcore asks for sniffio each time it sets up a lock or an event; without sniffio installed
that is a failed import, which walks sys.path on every call (about 1 ms of CPU per Bot API
call, the largest single cost of answering a tap).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

from telegram.request import HTTPXRequest

BODY = json.dumps({"ok": True, "result": True}).encode()


class _Lookups:
    """A finder that finds nothing and remembers what was looked for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.names.append(name)
        return None


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()  # the client closed its connection
            return
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
        )
        await writer.drain()


async def test_bot_api_calls_look_up_no_module() -> None:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = HTTPXRequest()
    await request.initialize()
    url = f"http://127.0.0.1:{port}/botTOKEN/answerCallbackQuery"
    lookups = _Lookups()
    try:
        # The first call may import what httpx loads lazily; the ones after it must not.
        await request.post(url)
        sys.meta_path.insert(0, lookups)
        try:
            for _ in range(5):
                assert await request.post(url) is True
        finally:
            sys.meta_path.remove(lookups)
    finally:
        await request.shutdown()
        server.close()
        await server.wait_closed()
    assert lookups.names == []
