"""The policy in force: one holder, read at each decision, swapped whole on reload."""

from __future__ import annotations

from opsgate.services.policy import Policy


class PolicySource:
    """Consumers keep the holder, never a Policy: a reload then reaches every one of them.

    A swap is one assignment on the event loop, so a reader sees the old policy or the new
    one, never a mix; a decision that needs several answers reads ``current()`` once.
    """

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._generation = 1

    def current(self) -> Policy:
        return self._policy

    @property
    def generation(self) -> int:
        """How many policies this process has had: 1 at start, one more per reload."""
        return self._generation

    def replace(self, policy: Policy) -> Policy:
        """Put ``policy`` in force; returns the one it replaces."""
        old, self._policy = self._policy, policy
        self._generation += 1
        return old
