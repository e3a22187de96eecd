"""The HTTP client under the bot's Bot API calls: PTB's request interface on aiohttp's pool.

PTB's own client (HTTPXRequest) costs about 0.9 ms of CPU per call on loopback, and 1.6 ms
each when a hundred are in flight, for httpcore looks at every waiting request and every pooled
connection whenever one starts or ends. The same calls on aiohttp cost about 0.2 ms, whatever
the number in flight (bench/bot_api_pool.py). A burst of taps is a hundred answers at once, and
a storm's sends and edits share the same loop, so this is most of what a tap costs.
aiohttp is already a dependency (kubernetes-asyncio runs on it); PTB documents ``BaseRequest``
as the interface for other HTTP libraries. ``getUpdates`` runs on it too, on a pool of its own
(polled_updates.FreshUpdatesRequest).

Failures are raised as PTB raises them, ``TimedOut`` or ``NetworkError`` *from* the aiohttp
exception, which says how far the request got (sender.may_have_been_carried_out).
"""

from __future__ import annotations

import ssl

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

# aiohttp gave up before any of the request was written: Telegram cannot have carried it out.
# ConnectionTimeoutError is the wait for a pooled connection or for a new one to be set up.
NOT_SENT: tuple[type[aiohttp.ClientError], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)


class AiohttpRequest(BaseRequest):
    """Bot API calls over one aiohttp session: at most ``connections`` at once (a call beyond
    them waits up to the pool timeout for one), idle ones kept for aiohttp's keep-alive."""

    __slots__ = ("_connect_timeout", "_connections", "_read_timeout", "_session", "_tls")

    def __init__(
        self,
        *,
        connections: int,
        read_timeout: float,
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._connections = connections
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float:
        return self._read_timeout

    @property
    def connect_timeout(self) -> float:
        return self._connect_timeout

    @property
    def connections(self) -> int:
        return self._connections

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections, limit_per_host=0, ssl=self._tls or True
            )
            # No cookies: the Bot API sets none, and a jar costs every call a lookup.
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """See :meth:`BaseRequest.do_request`. aiohttp has no write timeout: a Bot API call's
        body is small, and the read timeout starts once it is written."""
        if self._session is None:
            # PTB's Bot.initialize also calls getMe; a bot used without it still works.
            await self.initialize()
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is shut down")
        read = _given(read_timeout, self._read_timeout)
        connect = _given(connect_timeout, self._connect_timeout)
        pool = _given(pool_timeout, self._connect_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            # aiohttp's connect covers the wait for a free connection and setting up a new one.
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
        try:
            async with session.request(
                method, url, data=_body(request_data), timeout=timeout
            ) as response:
                return response.status, await response.read()
        except TimeoutError as err:
            # aiohttp's own timeouts are TimeoutErrors too (ServerTimeoutError and below).
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{type(err).__name__}: {err}") from err


def _given(value: ODVInput[float], default: float) -> float | None:
    return default if isinstance(value, DefaultValue) else value


def _body(request_data: RequestData | None) -> aiohttp.FormData | dict[str, str] | None:
    """Form fields as PTB encodes them for its own client; a multipart form for uploads."""
    if request_data is None:
        return None
    if not request_data.contains_files:
        return request_data.json_parameters
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in request_data.multipart_data.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form
