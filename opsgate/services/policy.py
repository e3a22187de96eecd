"""Who may approve what: Telegram user ids -> roles -> namespaces, operations, risk levels."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from opsgate.services.agents import AgentRule
from opsgate.services.operation_specs import SPECS, Scope
from opsgate.services.operations import Operation, OperationKind
from opsgate.services.risk import Risk

ANY = "*"


class PolicyError(Exception):
    """The policy file cannot be used; one line per problem, each saying where and why."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


@dataclass(frozen=True)
class PolicyProblem:
    where: str  # the path in the document, e.g. "users.1.id"; empty for the whole file
    message: str

    def line(self, source: str) -> str:
        return ": ".join(part for part in (source, self.where, self.message) if part)


class AlertPermission(StrEnum):
    """What a role may do to an alert itself, apart from approving remediations."""

    SILENCE = "silence"  # create and expire Alertmanager silences from the card
    ACK = "ack"  # say "I am on it"


class RoleRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespaces: list[str] = Field(default_factory=list)
    operations: list[str] = Field(default_factory=list)
    risk_levels: list[Risk] = Field(default_factory=list)
    # Scoped by ``namespaces`` like operations; an incident without a namespace needs "*".
    alerts: list[AlertPermission] = Field(default_factory=list)

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
    # AI agents that may propose (never approve); see services/agents.py.
    agents: dict[str, AgentRule] = Field(default_factory=dict)

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


def reference_problems(doc: PolicyDocument) -> list[PolicyProblem]:
    """What makes the document unusable: names that point nowhere, one id twice."""
    problems: list[PolicyProblem] = []
    first_seen: dict[int, int] = {}
    for i, user in enumerate(doc.users):
        if user.id in first_seen:
            problems.append(
                PolicyProblem(f"users.{i}.id", f"{user.id} is already users.{first_seen[user.id]}")
            )
        first_seen.setdefault(user.id, i)
        for j, role in enumerate(user.roles):
            if role not in doc.roles:
                problems.append(
                    PolicyProblem(
                        f"users.{i}.roles.{j}", f"undefined role {role!r}{_known(doc.roles)}"
                    )
                )
    for i, route in enumerate(doc.routes):
        problems.extend(_notifier_problems(f"routes.{i}.notifiers", route.notifiers, doc))
        if route.chat_id is None and route.thread_id is not None:
            problems.append(
                PolicyProblem(f"routes.{i}.thread_id", "a forum topic needs the route's chat_id")
            )
        if route.chat_id is None and not route.subscribers and not route.notifiers:
            # A match without a destination still wins, so later routes never see its alerts.
            problems.append(
                PolicyProblem(f"routes.{i}", "sends nowhere; set chat_id, subscribers or notifiers")
            )
    problems.extend(_notifier_problems("result_notifiers", doc.result_notifiers, doc))
    return problems


def quorum_problems(doc: PolicyDocument) -> list[PolicyProblem]:
    """Quorums no set of policy users can reach, over the namespaces, operations and risk
    levels the policy names (``*`` standing for the ones it does not name)."""
    quorum = {**DEFAULT_QUORUM, **doc.quorum}
    roles = doc.roles.values()
    namespaces = sorted({n for r in roles for n in r.namespaces})
    named = {o for r in roles for o in r.operations}
    operations = [k for k in OperationKind if k in named or ANY in named]
    risks = [k for k in Risk if k in doc.quorum or any(k in r.risk_levels for r in roles)]
    problems: list[PolicyProblem] = []
    for risk in risks:
        # (where, approvers) -> operations, so one line covers every operation alike.
        short: dict[tuple[str, tuple[str, ...]], list[OperationKind]] = defaultdict(list)
        for op in operations:
            spec = SPECS[op]
            if spec.default_risk.rank > risk.rank:
                continue  # the operation never runs at this risk: its floor is higher
            on_nodes = spec.scope is Scope.NODE
            # A node belongs to no namespace: only a role over every namespace may touch it.
            for namespace in [ANY] if on_nodes else namespaces:
                approvers = _approvers(doc, op, namespace, risk)
                if len(approvers) < quorum[risk]:
                    where = "on nodes" if on_nodes else f"in namespace {namespace}"
                    short[(where, approvers)].append(op)
        for (where, approvers), ops in short.items():
            who = (
                f"only {_count(len(approvers), 'user')} ({', '.join(approvers)})"
                if approvers
                else "no user"
            )
            problems.append(
                PolicyProblem(
                    f"quorum.{risk.value}",
                    f"{_count(quorum[risk], 'approval')} needed, but {who} may approve "
                    f"{', '.join(ops)} {where} at {risk.value} risk",
                )
            )
    return problems


def check_document(doc: PolicyDocument) -> list[PolicyProblem]:
    """Every problem of a schema-valid document, for ``check-policy`` and ``serve``."""
    if not doc.users:
        return [PolicyProblem("users", "no users are defined, so nobody may approve anything")]
    return [*reference_problems(doc), *quorum_problems(doc)]


def schema_problems(exc: ValidationError) -> list[PolicyProblem]:
    problems = []
    for error in exc.errors():
        # Dict keys are reported under a trailing "[key]": the key itself names the place.
        where = ".".join(str(p) for p in error["loc"] if p != "[key]")
        message = error["msg"].removeprefix("Value error, ")
        problems.append(PolicyProblem(where, message))
    return problems


def _approvers(
    doc: PolicyDocument, op: OperationKind, namespace: str, risk: Risk
) -> tuple[str, ...]:
    first: dict[int, PolicyUser] = {}
    for user in doc.users:
        first.setdefault(user.id, user)  # a repeated id is reported; count the person once
    return tuple(
        user.name or str(user.id)
        for user in first.values()
        if any(
            rule is not None
            and (ANY in rule.operations or op in rule.operations)
            and risk in rule.risk_levels
            and (ANY in rule.namespaces or namespace in rule.namespaces)
            for rule in (doc.roles.get(name) for name in user.roles)
        )
    )


def _notifier_problems(where: str, names: list[str], doc: PolicyDocument) -> list[PolicyProblem]:
    return [
        PolicyProblem(f"{where}.{i}", f"undefined notifier {name!r}{_known(doc.notifiers)}")
        for i, name in enumerate(names)
        if name not in doc.notifiers
    ]


def _known(defined: dict[str, Any]) -> str:
    return f"; defined: {', '.join(sorted(defined))}" if defined else "; none is defined"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class Policy:
    def __init__(self, document: PolicyDocument) -> None:
        problems = reference_problems(document)
        if problems:
            raise PolicyError(*(p.line("policy") for p in problems))
        self._doc = document
        self._users = {u.id: u for u in document.users}
        self._quorum = {**DEFAULT_QUORUM, **document.quorum}

    @classmethod
    def empty(cls) -> Policy:
        return cls(PolicyDocument())

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        """The policy in ``path``, or PolicyError with every problem the file has."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        try:
            raw: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: {_yaml_error(exc)}") from None
        if raw is None or raw == {}:
            raise PolicyError(f"{path}: the file is empty; a policy needs roles and users")
        try:
            document = PolicyDocument.model_validate(raw)
        except ValidationError as exc:
            raise PolicyError(*(p.line(str(path)) for p in schema_problems(exc))) from None
        problems = check_document(document)
        if problems:
            raise PolicyError(*(p.line(str(path)) for p in problems))
        return cls(document)

    def quorum(self, risk: Risk) -> int:
        return self._quorum[risk]

    def sizes(self) -> dict[str, int]:
        """How many of each the policy defines: enough to tell two policies apart at a glance."""
        doc = self._doc
        return {
            "users": len(self._users),
            "roles": len(doc.roles),
            "routes": len(doc.routes),
            "notifiers": len(doc.notifiers),
        }

    def roles_of(self, user_id: int) -> list[str]:
        user = self._users.get(user_id)
        return list(user.roles) if user else []

    def entry_roles(self, user_id: int) -> list[str]:
        """Roles for a policy line naming this user: theirs, or else the defined role that
        allows least, so the line is valid as it is and grants no more than needed."""
        if user_id in self._users:
            return self.roles_of(user_id)
        roles = self._doc.roles
        if not roles:
            return []
        rights = {
            name: len(r.namespaces) + len(r.operations) + len(r.risk_levels) + len(r.alerts)
            for name, r in roles.items()
        }
        return [min(sorted(roles), key=lambda name: rights[name])]

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

    @property
    def agents(self) -> dict[str, AgentRule]:
        return dict(self._doc.agents)

    def who_may_approve(self, op: Operation, risk: Risk) -> tuple[list[str], list[str]]:
        """The roles that allow ``op`` at ``risk``, and the names of the users holding one."""
        roles = [n for n, r in sorted(self._doc.roles.items()) if self._role_allows(r, op, risk)]
        names = [
            u.name or str(u.id) for u in self._users.values() if any(r in roles for r in u.roles)
        ]
        return roles, names

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

    def may_handle_alert(
        self, user_id: int, permission: AlertPermission, namespace: str
    ) -> Decision:
        """Whether the user may silence or acknowledge an incident in ``namespace``."""
        user = self._users.get(user_id)
        if user is None:
            return Decision(False, f"Your Telegram id {user_id} is not in the opsgate policy.")
        for role_name in user.roles:
            rule = self._doc.roles[role_name]
            if permission in rule.alerts and (
                ANY in rule.namespaces or (namespace != "" and namespace in rule.namespaces)
            ):
                return Decision(True)
        where = f"in namespace {namespace}" if namespace else "outside a namespace"
        return Decision(
            False, f"Your roles ({', '.join(user.roles)}) do not allow {permission.value} {where}."
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


def _yaml_error(exc: yaml.YAMLError) -> str:
    """``line N: <problem>``, without PyYAML's multi-line excerpt of the file."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"cannot parse YAML: {problem}"
    return f"line {mark.line + 1}: cannot parse YAML: {problem}"
