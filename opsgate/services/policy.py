"""Who may approve what: Telegram user ids -> roles -> namespaces, operations, risk levels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opsgate.services.operations import Operation, OperationKind
from opsgate.services.risk import Risk

ANY = "*"


class PolicyError(Exception):
    """The policy file cannot be used; the message says where and why."""


class RoleRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespaces: list[str] = Field(default_factory=list)
    operations: list[str] = Field(default_factory=list)
    risk_levels: list[Risk] = Field(default_factory=list)

    @field_validator("operations")
    @classmethod
    def _known_operations(cls, value: list[str]) -> list[str]:
        known = {k.value for k in OperationKind} | {ANY}
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown operations {unknown}; known: {sorted(known)}")
        return value


class PolicyUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    name: str = ""
    roles: list[str]


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: dict[str, RoleRule] = Field(default_factory=dict)
    users: list[PolicyUser] = Field(default_factory=list)
    quorum: dict[Risk, int] = Field(default_factory=dict)

    @field_validator("quorum")
    @classmethod
    def _positive(cls, value: dict[Risk, int]) -> dict[Risk, int]:
        for risk, n in value.items():
            if n < 1:
                raise ValueError(f"quorum for {risk.value} must be at least 1")
        return value


DEFAULT_QUORUM = {Risk.LOW: 1, Risk.MEDIUM: 1, Risk.HIGH: 2, Risk.CRITICAL: 2}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class Policy:
    def __init__(self, document: PolicyDocument) -> None:
        missing = {r for u in document.users for r in u.roles} - set(document.roles)
        if missing:
            raise PolicyError(f"users refer to undefined roles: {sorted(missing)}")
        self._doc = document
        self._users = {u.id: u for u in document.users}
        self._quorum = {**DEFAULT_QUORUM, **document.quorum}

    @classmethod
    def empty(cls) -> Policy:
        return cls(PolicyDocument())

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        try:
            raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"{path}: cannot read: {exc}") from None
        try:
            return cls(PolicyDocument.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PolicyError(f"{path}: {where}: {first['msg']}") from None

    def quorum(self, risk: Risk) -> int:
        return self._quorum[risk]

    def roles_of(self, user_id: int) -> list[str]:
        user = self._users.get(user_id)
        return list(user.roles) if user else []

    def authorize(self, user_id: int, op: Operation, risk: Risk) -> Decision:
        user = self._users.get(user_id)
        if user is None:
            return Decision(False, f"Your Telegram id {user_id} is not in the opsgate policy.")
        for role_name in user.roles:
            rule = self._doc.roles[role_name]
            if self._role_allows(rule, op, risk):
                return Decision(True)
        return Decision(
            False,
            f"Your roles ({', '.join(user.roles)}) do not allow {op.kind.value} "
            f"on {op.target()} at {risk.value} risk.",
        )

    @staticmethod
    def _role_allows(rule: RoleRule, op: Operation, risk: Risk) -> bool:
        if ANY not in rule.operations and op.kind.value not in rule.operations:
            return False
        if risk not in rule.risk_levels:
            return False
        if ANY in rule.namespaces:
            return True
        # Nodes belong to no namespace: only a role over every namespace may touch them.
        return op.namespace is not None and op.namespace in rule.namespaces
