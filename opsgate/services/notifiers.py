"""Result receivers beside Telegram: Slack and Discord incoming webhooks, generic JSON webhooks.

Each send makes a few quick attempts in-process (bounded, with backoff); a receiver that is
still failing after them raises, and the durable job that called it tries again later.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from opsgate.services.chat import ResultView
from opsgate.services.policy import NotifierRule
from opsgate.services.policy_source import PolicySource

log = structlog.get_logger(__name__)

ATTEMPTS = 3


class NotifierError(Exception):
    pass


class Notifier(Protocol):
    name: str

    async def send(self, result: ResultView) -> None: ...


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code == 429 or exc.response.status_code >= 500
    )


def plain_summary(result: ResultView) -> str:
    head = "✅ Succeeded" if result.succeeded else "❌ Failed"
    what = " · ".join(p for p in (result.alertname, result.service, result.namespace) if p)
    approvers = ", ".join(result.approvers) or "nobody"
    took = f" in {result.duration_seconds:.1f} s" if result.duration_seconds is not None else ""
    return (
        f"{head} · {result.incident_id}{f' · {what}' if what else ''}\n"
        f"{result.action}\n{result.detail}\n"
        f"approved by {approvers} · {result.attempts} attempt(s){took}"
    )


class WebhookNotifier:
    """POSTs JSON; the body shape depends on the receiver type."""

    def __init__(self, name: str, rule: NotifierRule, client: httpx.AsyncClient) -> None:
        self.name = name
        self._rule = rule
        self._client = client

    def body(self, result: ResultView) -> dict[str, Any]:
        text = plain_summary(result)
        if self._rule.type == "slack":
            return {"text": text}
        if self._rule.type == "discord":
            return {"content": text[:2000], "allowed_mentions": {"parse": []}}
        return {
            "event": "execution_finished",
            "incident_id": result.incident_id,
            "alertname": result.alertname,
            "service": result.service,
            "namespace": result.namespace,
            "action": result.action,
            "succeeded": result.succeeded,
            "detail": result.detail,
            "attempts": result.attempts,
            "duration_seconds": result.duration_seconds,
            "approved_by": list(result.approvers),
        }

    async def send(self, result: ResultView) -> None:
        body = self.body(result)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(ATTEMPTS),
                wait=wait_exponential(multiplier=0.2, max=2),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    response = await self._client.post(
                        self._rule.url, json=body, headers=self._rule.headers
                    )
                    response.raise_for_status()
        except httpx.HTTPError as exc:
            raise NotifierError(f"{self.name}: {_describe(exc)}") from exc


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


class PolicyNotifiers:
    """The notifiers the policy in force defines, looked up when a result goes out."""

    def __init__(self, policy: PolicySource, client: httpx.AsyncClient) -> None:
        self._policy = policy
        self._client = client

    def get(self, name: str) -> Notifier | None:
        rule = self._policy.current().notifiers.get(name)
        return WebhookNotifier(name, rule, self._client) if rule is not None else None
