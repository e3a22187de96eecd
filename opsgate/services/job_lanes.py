"""Which runner runs which kind of job.

A job that talks to Telegram waits in the outbound scheduler for its chat's message budget,
and holds its runner's worker while it waits. In a storm hundreds of cards wait for their
turn: in one shared pool they would hold every worker, and an approved execution or the reply
with its result would wait behind them for minutes. Each lane has workers of its own, so
waiting for the budget only ever delays work of the same lane.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from opsgate.services.job_kinds import JobKind

ACTIONS_LANE = "actions"
REPLIES_LANE = "replies"
CHAT_LANE = "chat"

JOB_LANES: dict[str, tuple[JobKind, ...]] = {
    # Kubernetes and the database only (plans, executions, learning): never waits for a
    # message budget.
    ACTIONS_LANE: (
        JobKind.PLAN,
        JobKind.EXECUTE,
        JobKind.VERIFY,
        JobKind.LEARN,
        JobKind.KNOWLEDGE,
        JobKind.EXTRACT_PLAYBOOK,
    ),
    # What people wait for in a storm: the results of their approvals, and the digest that
    # shows every incident whose card waits. Never stuck behind a storm's card jobs, which
    # are hundreds where these are one per approval or per chat.
    REPLIES_LANE: (JobKind.PUBLISH_RESULT, JobKind.DIGEST),
    CHAT_LANE: (JobKind.SYNC_CARD, JobKind.NOTIFY),
}

# Run by runners of their own, not by a lane: updates by the webhook's update runner, periodic
# tasks by the runner that is given them.
OUTSIDE_LANES = frozenset({JobKind.TELEGRAM_UPDATE, JobKind.PERIODIC})

H = TypeVar("H")


def lanes(handlers: Mapping[JobKind, H]) -> dict[str, dict[JobKind, H]]:
    """``handlers`` split by lane; a kind in no lane is a mistake caught at start, not a job
    that silently never runs."""
    lanes_of = {kind: lane for lane, kinds in JOB_LANES.items() for kind in kinds}
    missing = sorted(kind.value for kind in handlers if kind not in lanes_of)
    if missing:
        raise ValueError(f"job kinds in no lane: {', '.join(missing)}")
    split: dict[str, dict[JobKind, H]] = {}
    for kind, handler in handlers.items():
        split.setdefault(lanes_of[kind], {})[kind] = handler
    return split
