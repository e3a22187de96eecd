"""Transient or permanent: decided by exception type and HTTP status, never by message words."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Everything else the API server answers is permanent, including 500: an unknown server
# error may have applied the change, and repeating a change we cannot see is the worse risk.


@dataclass(frozen=True)
class Failure:
    transient: bool
    message: str
    http_status: int | None = None
    # What the server asked us to wait (its Retry-After), as client-go honours it.
    retry_after: float | None = None

    def short(self) -> str:
        return f"{self.http_status}: {self.message}" if self.http_status else self.message


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, ApiException):
        status = int(exc.status) if exc.status is not None else None
        return Failure(
            status in TRANSIENT_STATUSES, _api_message(exc), status, _retry_after(exc.headers)
        )
    if isinstance(exc, TimeoutError):
        return Failure(True, "the Kubernetes API did not answer in time")
    if _aiohttp_transport_error(exc):
        return Failure(True, f"connection to the Kubernetes API failed ({type(exc).__name__})")
    if isinstance(exc, ConnectionError):
        return Failure(True, f"connection to the Kubernetes API failed ({type(exc).__name__})")
    return Failure(False, f"{type(exc).__name__}: {exc}")


def _aiohttp_transport_error(exc: BaseException) -> bool:
    """A lost or cut connection of the Kubernetes client's HTTP stack. aiohttp loads with the
    client (kube_client): until it has, no exception can be one of its own."""
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
    )


def _retry_after(headers: Any) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date (RFC 9110); None when absent or bad."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _api_message(exc: ApiException) -> str:
    """The API server's own Status message, else its reason phrase."""
    raw = exc.body
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            return body[:300]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])[:300]
    return str(exc.reason or "error")
