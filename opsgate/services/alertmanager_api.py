"""Alertmanager's API v2, the silence calls only: create, expire, read one back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

# Alertmanager's silence states (api/v2 ``SilenceStatus.state``).
ACTIVE = "active"
PENDING = "pending"
EXPIRED = "expired"


class AlertmanagerError(Exception):
    """Alertmanager refused the call or could not be reached; the message says which, short."""


@dataclass(frozen=True)
class SilenceRequest:
    matchers: dict[str, str]  # label -> value, each an equality matcher
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


def is_http_url(url: str) -> bool:
    return url.lower().startswith(("http://", "https://")) and len(url) <= 2000


class AlertmanagerClient:
    """Every call ends within ``timeout`` seconds, so a tap can wait for it."""

    def __init__(self, http: httpx.AsyncClient, timeout: float) -> None:
        self._http = http
        self._timeout = timeout

    async def create_silence(self, base_url: str, request: SilenceRequest) -> str:
        """The new silence's id."""
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in sorted(request.matchers.items())
            ],
            "startsAt": _iso(request.starts_at),
            "endsAt": _iso(request.ends_at),
            "createdBy": request.created_by,
            "comment": request.comment,
        }
        response = await self._call("POST", f"{_root(base_url)}/api/v2/silences", body)
        try:
            silence_id = response.json()["silenceID"]
        except (ValueError, KeyError, TypeError):
            raise AlertmanagerError("Alertmanager's answer has no silence id") from None
        if not isinstance(silence_id, str) or not silence_id:
            raise AlertmanagerError("Alertmanager's answer has no silence id")
        return silence_id

    async def expire_silence(self, base_url: str, silence_id: str) -> None:
        await self._call("DELETE", f"{_root(base_url)}/api/v2/silence/{quote(silence_id)}")

    async def silence_state(self, base_url: str, silence_id: str) -> str | None:
        """``active``, ``pending`` or ``expired``; None when Alertmanager does not know it."""
        url = f"{_root(base_url)}/api/v2/silence/{quote(silence_id)}"
        try:
            response = await self._call("GET", url)
        except _NotFound:
            return None
        try:
            state = response.json()["status"]["state"]
        except (ValueError, KeyError, TypeError):
            raise AlertmanagerError("Alertmanager's answer has no silence state") from None
        return str(state)

    async def _call(self, method: str, url: str, body: object = None) -> httpx.Response:
        try:
            response = await self._http.request(method, url, json=body, timeout=self._timeout)
        except httpx.TimeoutException:
            raise AlertmanagerError(f"Alertmanager did not answer in {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise AlertmanagerError(f"Alertmanager is unreachable ({type(exc).__name__})") from None
        if response.status_code == 404:
            raise _NotFound(f"Alertmanager answered 404 for {method} {url}")
        if response.status_code >= 300:
            raise AlertmanagerError(
                f"Alertmanager answered {response.status_code}: {_message(response)}"
            )
        return response


class _NotFound(AlertmanagerError):
    pass


def _root(base_url: str) -> str:
    return base_url.rstrip("/")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _message(response: httpx.Response) -> str:
    """Alertmanager's own words, short: a JSON string, or the ``message`` of an error object."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message", ""))[:200]
    return str(body)[:200]
