"""Who may approve what: Telegram user ids -> roles -> namespaces, operations, risk levels."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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


class NotifierRule(BaseModel):
    """A result receiver beside Telegram."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["slack", "discord", "webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)


class RouteRule(BaseModel):
    """Alerts whose labels match go to ``chat_id`` (and topic); results also to subscribers."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    chat_id: int | None = None
    thread_id: int | None = None
    subscribers: list[int] = Field(default_factory=list)
    notifiers: list[str] = Field(default_factory=list)

    @field_validator("match_re")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{label}: {exc}") from None
        return value

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match.items()):
            return False
        return all(re.fullmatch(p, labels.get(k, "")) for k, p in self.match_re.items())


class AutoApproveRule(BaseModel):
    """Off unless switched on; even then only for low-risk actions of approved playbooks."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    min_trust: float = Field(default=0.8, ge=0.0, le=1.0)


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auto_approve: AutoApproveRule = Field(default_factory=AutoApproveRule)
    roles: dict[str, RoleRule] = Field(default_factory=dict)
    users: list[PolicyUser] = Field(default_factory=list)
    quorum: dict[Risk, int] = Field(default_factory=dict)
    routes: list[RouteRule] = Field(default_factory=list)
    result_subscribers: list[int] = Field(default_factory=list)
    result_notifiers: list[str] = Field(default_factory=list)
    notifiers: dict[str, NotifierRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _notifiers_exist(self) -> PolicyDocument:
        named = set(self.result_notifiers) | {n for r in self.routes for n in r.notifiers}
        missing = named - set(self.notifiers)
        if missing:
            raise ValueError(f"undefined notifiers: {sorted(missing)}")
        return self

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

    def is_member(self, user_id: int) -> bool:
        """Anyone named in the policy may ask opsgate questions."""
        return user_id in self._users

    def can_approve(self, user_id: int) -> bool:
        """Has at least one role that allows some operation at some risk."""
        return any(
            self._doc.roles[r].operations and self._doc.roles[r].risk_levels
            for r in self.roles_of(user_id)
        )

    def is_admin(self, user_id: int) -> bool:
        """May approve or retire playbooks: a role over every namespace and operation."""
        return any(
            ANY in self._doc.roles[r].namespaces and ANY in self._doc.roles[r].operations
            for r in self.roles_of(user_id)
        )

    @property
    def auto_approve(self) -> AutoApproveRule:
        return self._doc.auto_approve

    @property
    def routes(self) -> list[RouteRule]:
        return list(self._doc.routes)

    @property
    def result_subscribers(self) -> list[int]:
        return list(self._doc.result_subscribers)

    @property
    def result_notifiers(self) -> list[str]:
        return list(self._doc.result_notifiers)

    @property
    def notifiers(self) -> dict[str, NotifierRule]:
        return dict(self._doc.notifiers)

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
