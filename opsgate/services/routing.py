"""Routes: which chat (and forum topic) gets an alert's card, and who hears the result."""

from __future__ import annotations

from dataclasses import dataclass

from opsgate.services.chat import ChatTarget
from opsgate.services.policy_source import PolicySource

TELEGRAM = "tg:"
NOTIFIER = "notifier:"


@dataclass(frozen=True)
class Route:
    name: str
    target: ChatTarget
    destinations: tuple[str, ...]


class Router:
    def __init__(self, policy: PolicySource, default_target: ChatTarget) -> None:
        self._policy = policy
        self._default = default_target

    def route(self, labels: dict[str, str]) -> Route:
        """The first matching route wins; no match means the default chat."""
        policy = self._policy.current()
        rule = next((r for r in policy.routes if r.matches(labels)), None)
        if rule is None or rule.chat_id is None:
            target = self._default
        else:
            target = ChatTarget(rule.chat_id, rule.thread_id)
        subscribers = [*(rule.subscribers if rule else []), *policy.result_subscribers]
        notifiers = [*(rule.notifiers if rule else []), *policy.result_notifiers]
        destinations = [
            # The card's own chat already gets the reply in the alert thread.
            *(f"{TELEGRAM}{c}" for c in subscribers if c != target.chat_id),
            *(f"{NOTIFIER}{n}" for n in notifiers),
        ]
        name = (rule.name or "route") if rule else "default"
        return Route(name, target, tuple(dict.fromkeys(destinations)))

    def chats(self) -> tuple[int, ...]:
        """Every chat the routes may post to besides the default: cards and result copies."""
        policy = self._policy.current()
        routes = policy.routes
        cards = [r.chat_id for r in routes if r.chat_id is not None]
        copies = [c for r in routes for c in r.subscribers]
        return tuple(dict.fromkeys([*cards, *copies, *policy.result_subscribers]))
