from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from opsgate.services.failures import classify


def api_error(status: int, message: str = "boom") -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = f'{{"kind":"Status","message":"{message}","code":{status}}}'.encode()
    return exc


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_statuses(status: int) -> None:
    failure = classify(api_error(status))
    assert failure.transient and failure.http_status == status and failure.message == "boom"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_permanent_statuses(status: int) -> None:
    assert not classify(api_error(status)).transient


def test_words_in_messages_do_not_decide() -> None:
    # A 404 whose message mentions a timeout is still a 404.
    assert not classify(api_error(404, "connection refused, timed out")).transient
    assert classify(api_error(503, "not found")).transient


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("x"),
        ConnectionRefusedError(),
    ],
)
def test_network_errors_are_transient(exc: BaseException) -> None:
    assert classify(exc).transient


def test_unknown_errors_are_permanent() -> None:
    assert not classify(ValueError("weird")).transient


class _Response:
    """The parts of an HTTP response ApiException reads (``http_resp``)."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.reason = "Reason"
        self.data = b'{"kind":"Status","message":"slow down"}'
        self._headers = headers

    def getheaders(self) -> dict[str, str]:
        return self._headers


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_read_from_a_429_or_a_5xx(status: int) -> None:
    failure = classify(ApiException(http_resp=_Response(status, {"Retry-After": "10"})))
    assert failure.transient and failure.retry_after == 10.0


def test_retry_after_as_an_http_date_and_when_absent_or_bad() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    dated = classify(ApiException(http_resp=_Response(503, {"Retry-After": later})))
    assert dated.retry_after is not None and 50 < dated.retry_after <= 60
    assert classify(ApiException(http_resp=_Response(503, {}))).retry_after is None
    assert (
        classify(ApiException(http_resp=_Response(503, {"Retry-After": "soon"}))).retry_after
        is None
    )
