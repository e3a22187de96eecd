"""AI agents in the policy: who they are, how they prove it, and what they may propose.

An agent is not a Telegram user: it can propose, never sign. Its token is never stored in the
policy file in clear: the file holds its sha256 or the name of an environment variable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from opsgate.services.operations import Operation, OperationKind
from opsgate.services.risk import Risk

ANY = "*"
REQUESTER_PREFIX = "agent:"


class AgentRule(BaseModel):
    """``agents.<name>`` in the policy file."""

    model_config = ConfigDict(extra="forbid")

    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    token_env: str | None = Field(default=None, min_length=1)
    namespaces: list[str] = Field(default_factory=list)
    operations: list[str] = Field(default_factory=list)
    # The highest risk it may propose at; above it a proposal is refused before any card.
    max_risk: Risk = Risk.MEDIUM
    description: str = ""

    @field_validator("operations")
    @classmethod
    def _known_operations(cls, value: list[str]) -> list[str]:
        known = {k.value for k in OperationKind} | {ANY}
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown operations {unknown}; known: {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> AgentRule:
        if (self.token_sha256 is None) == (self.token_env is None):
            raise ValueError("give exactly one of token_sha256 and token_env")
        return self

    def matches(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).hexdigest()
        if self.token_sha256 is not None:
            return hmac.compare_digest(digest, self.token_sha256)
        expected = os.environ.get(self.token_env or "", "")
        # An unset variable turns the agent off rather than letting an empty token in.
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


@dataclass(frozen=True)
class Agent:
    name: str
    rule: AgentRule

    @property
    def requester(self) -> str:
        return f"{REQUESTER_PREFIX}{self.name}"

    def may_see(self, namespace: str) -> bool:
        return ANY in self.rule.namespaces or namespace in self.rule.namespaces

    def visible_namespaces(self) -> frozenset[str] | None:
        """What :meth:`may_see` allows, for a query's WHERE; None: every namespace."""
        return None if ANY in self.rule.namespaces else frozenset(self.rule.namespaces)

    def may_propose_kind(self, kind: OperationKind) -> bool:
        return ANY in self.rule.operations or kind.value in self.rule.operations

    def scope_problem(self, op: Operation, risk: Risk) -> str | None:
        """Why this agent may not propose ``op`` at ``risk``; None when it may."""
        if not self.may_propose_kind(op.kind):
            allowed = ", ".join(self.rule.operations) or "none"
            return f"agent {self.name} may not propose {op.kind.value} (allowed: {allowed})"
        if op.namespace is None:
            if ANY not in self.rule.namespaces:
                return f"agent {self.name} may not propose changes to nodes"
        elif not self.may_see(op.namespace):
            allowed = ", ".join(self.rule.namespaces) or "none"
            return (
                f"agent {self.name} may not propose changes in namespace {op.namespace} "
                f"(allowed: {allowed})"
            )
        if risk.rank > self.rule.max_risk.rank:
            return (
                f"agent {self.name} may propose up to {self.rule.max_risk.value} risk; "
                f"this is {risk.value}"
            )
        return None


def authenticate(agents: dict[str, AgentRule], authorization: str) -> Agent | None:
    """The agent whose token the ``Authorization: Bearer`` header carries, or None."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    found = None
    # Every rule is checked, so the time taken does not tell which agent came close.
    for name, rule in sorted(agents.items()):
        if rule.matches(token) and found is None:
            found = Agent(name, rule)
    return found
