"""Reloading the policy file: validated first, swapped whole, pending approvals re-judged.

Each process reloads its own file, on SIGHUP or ``POST /api/v1/policy/reload``; replicas do
not tell each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from sqlalchemy.exc import SQLAlchemyError

from opsgate.services.approvals import ApprovalService, PendingRecheck
from opsgate.services.policy import Policy, PolicyError
from opsgate.services.policy_source import PolicySource
from opsgate.services.storage.models import utcnow

log = structlog.get_logger(__name__)


class ReloadRefused(Exception):
    """The old policy stays in force; ``lines`` say why, one problem each."""

    def __init__(self, lines: list[str], *, nothing_to_read: bool = False) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines
        self.nothing_to_read = nothing_to_read


@dataclass(frozen=True)
class PolicyState:
    file: str | None
    generation: int
    loaded_at: datetime
    sizes: dict[str, int]


@dataclass(frozen=True)
class Reloaded:
    state: PolicyState
    # None when the re-check could not run; taps still judge by the new policy.
    pending: PendingRecheck | None


class PolicyReloader:
    def __init__(self, source: PolicySource, path: Path | None, approvals: ApprovalService) -> None:
        self._source = source
        self._path = path
        self._approvals = approvals
        self._loaded_at = utcnow()
        # Two reloads at once would re-check pending approvals against each other's policy.
        self._lock = asyncio.Lock()

    def state(self) -> PolicyState:
        return PolicyState(
            file=str(self._path) if self._path is not None else None,
            generation=self._source.generation,
            loaded_at=self._loaded_at,
            sizes=self._source.current().sizes(),
        )

    async def reload(self, trigger: str) -> Reloaded:
        """The file read and checked as ``opsgate check-policy`` does, then put in force."""
        if self._path is None:
            lines = ["OPSGATE_POLICY_FILE is not set, so there is no file to reload"]
            log.warning("policy_reload_refused", trigger=trigger, file=None, errors=lines[0])
            raise ReloadRefused(lines, nothing_to_read=True)
        path = self._path
        async with self._lock:
            try:
                policy = await asyncio.to_thread(Policy.from_file, path)
            except PolicyError as exc:
                log.warning(
                    "policy_reload_refused",
                    trigger=trigger,
                    file=str(path),
                    errors="; ".join(exc.lines),
                )
                raise ReloadRefused(exc.lines) from None
            self._source.replace(policy)
            self._loaded_at = utcnow()
            state = self.state()
            log.info(
                "policy_reloaded",
                trigger=trigger,
                file=str(path),
                generation=state.generation,
                **state.sizes,
            )
            pending = await self.recheck_pending()
        return Reloaded(state, pending)

    async def recheck_pending(self) -> PendingRecheck | None:
        """Pending approvals judged by the policy in force; at start too, since the policy
        may have changed while the process was down. None when the database failed: every
        tap re-checks anyway."""
        try:
            return await self._approvals.recheck_pending()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("pending_recheck_failed", error=str(exc))
            return None
