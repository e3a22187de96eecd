"""Risk levels and what each operation risks by default."""

from __future__ import annotations

from enum import StrEnum

from opsgate.services.operations import Operation, OperationKind


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Risk).index(self)


DEFAULT_RISK = {
    OperationKind.ROLLOUT_RESTART: Risk.MEDIUM,
    OperationKind.ROLLOUT_UNDO: Risk.HIGH,
    OperationKind.SCALE: Risk.MEDIUM,
    OperationKind.DELETE_POD: Risk.LOW,
    OperationKind.CORDON: Risk.MEDIUM,
    OperationKind.UNCORDON: Risk.LOW,
}


def parse_risk(value: str) -> Risk:
    try:
        return Risk(value.strip().lower())
    except ValueError:
        allowed = ", ".join(r.value for r in Risk)
        raise ValueError(f"risk must be one of {allowed}, not '{value}'") from None


def effective_risk(op: Operation, declared: Risk | None) -> Risk:
    """A proposer may raise the risk of an operation, never lower it below its default."""
    floor = DEFAULT_RISK[op.kind]
    if declared is None or declared.rank < floor.rank:
        return floor
    return declared


def blast_radius(op: Operation) -> str:
    """One line a tired human can weigh before tapping."""
    match op.kind:
        case OperationKind.ROLLOUT_RESTART:
            return f"every pod of {op.target()} is replaced, one rollout"
        case OperationKind.ROLLOUT_UNDO:
            return f"{op.target()} goes back to its previous revision, every pod replaced"
        case OperationKind.SCALE:
            return f"{op.target()} is set to {op.replicas} replicas"
        case OperationKind.DELETE_POD:
            return f"one pod ({op.target()}) is deleted; its controller replaces it"
        case OperationKind.CORDON:
            return f"no new pods are scheduled on node {op.name}"
        case OperationKind.UNCORDON:
            return f"node {op.name} accepts new pods again"
