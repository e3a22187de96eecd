"""The operation allowlist: action text in, typed operation out, anything else refused.

Nothing outside this grammar ever reaches the cluster: no shell, no free-form kubectl.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class OperationKind(StrEnum):
    ROLLOUT_RESTART = "rollout_restart"
    ROLLOUT_UNDO = "rollout_undo"
    SCALE = "scale"
    DELETE_POD = "delete_pod"
    CORDON = "cordon"
    UNCORDON = "uncordon"


WORKLOAD_KINDS = {
    "deployment": "deployment",
    "deployments": "deployment",
    "deploy": "deployment",
    "statefulset": "statefulset",
    "statefulsets": "statefulset",
    "sts": "statefulset",
    "daemonset": "daemonset",
    "daemonsets": "daemonset",
    "ds": "daemonset",
}
SCALABLE = {"deployment", "statefulset"}
MAX_REPLICAS = 1000
# RFC 1123 subdomain names (the rule for deployments, pods and nodes) and DNS label namespaces.
# Matched whole: `$` would also let a name end in a newline.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class OperationRefused(ValueError):
    """The action text is not an allowed operation; the message says why, for the card."""


@dataclass(frozen=True)
class Operation:
    kind: OperationKind
    target_kind: str
    name: str
    namespace: str | None = None
    replicas: int | None = None

    @property
    def is_namespaced(self) -> bool:
        return self.target_kind != "node"

    def describe(self) -> str:
        """The canonical kubectl form: what the card shows and the audit log records."""
        ns = f" -n {self.namespace}" if self.namespace else ""
        match self.kind:
            case OperationKind.ROLLOUT_RESTART:
                return f"kubectl rollout restart {self.target_kind}/{self.name}{ns}"
            case OperationKind.ROLLOUT_UNDO:
                return f"kubectl rollout undo {self.target_kind}/{self.name}{ns}"
            case OperationKind.SCALE:
                return (
                    f"kubectl scale {self.target_kind}/{self.name}{ns} --replicas={self.replicas}"
                )
            case OperationKind.DELETE_POD:
                return f"kubectl delete pod/{self.name}{ns}"
            case OperationKind.CORDON:
                return f"kubectl cordon {self.name}"
            case OperationKind.UNCORDON:
                return f"kubectl uncordon {self.name}"

    def target(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.target_kind} {where}{self.name}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operation:
        return cls(
            kind=OperationKind(data["kind"]),
            target_kind=data["target_kind"],
            name=data["name"],
            namespace=data.get("namespace"),
            replicas=data.get("replicas"),
        )


def parse_operation(action: str, *, default_namespace: str = "default") -> Operation:
    """Parse an action such as ``kubectl rollout restart deployment/checkout -n shop``."""
    return _parsed(action, default_namespace)


# The alerts of one rule carry one action, and each new group of a burst would parse it again
# (shlex is most of the cost). An Operation is immutable, so a parse is kept; a refusal is not
# (a raised call is never cached) and is worked out again each time.
@functools.lru_cache(maxsize=256)
def _parsed(action: str, default_namespace: str) -> Operation:
    try:
        words = shlex.split(action.strip())
    except ValueError as exc:
        raise OperationRefused(f"cannot read the action: {exc}") from None
    if words and words[0] == "kubectl":
        words = words[1:]
    if not words:
        raise OperationRefused("the action is empty")
    namespace, replicas, positional = _split_flags(words)
    verb = positional[0]
    rest = positional[1:]
    if verb == "rollout":
        op = _parse_rollout(rest, namespace or default_namespace)
    elif verb == "scale":
        op = _parse_scale(rest, namespace or default_namespace, replicas)
    elif verb == "delete":
        op = _parse_delete(rest, namespace or default_namespace)
    elif verb in ("cordon", "uncordon"):
        if namespace is not None:
            raise OperationRefused(f"{verb} acts on a node; nodes have no namespace")
        op = _parse_node(verb, rest)
    else:
        raise OperationRefused(
            f"'{verb}' is not an allowed operation (allowed: rollout restart, rollout undo, "
            "scale, delete pod, cordon, uncordon)"
        )
    if replicas is not None and op.kind is not OperationKind.SCALE:
        raise OperationRefused("--replicas only goes with scale")
    return op


def _split_flags(words: list[str]) -> tuple[str | None, int | None, list[str]]:
    namespace: str | None = None
    replicas: int | None = None
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-n", "--namespace"):
            if i + 1 >= len(words):
                raise OperationRefused(f"{word} needs a namespace")
            namespace = _check_namespace(words[i + 1])
            i += 2
            continue
        if word.startswith("--namespace="):
            namespace = _check_namespace(word.split("=", 1)[1])
        elif word.startswith("-n") and len(word) > 2:
            namespace = _check_namespace(word[2:])
        elif word == "--replicas":
            if i + 1 >= len(words):
                raise OperationRefused("--replicas needs a number")
            replicas = _check_replicas(words[i + 1])
            i += 2
            continue
        elif word.startswith("--replicas="):
            replicas = _check_replicas(word.split("=", 1)[1])
        elif word.startswith("-"):
            raise OperationRefused(f"the flag {word} is not allowed")
        else:
            positional.append(word)
        i += 1
    if not positional:
        raise OperationRefused("the action names no operation")
    return namespace, replicas, positional


def _check_namespace(value: str) -> str:
    if not _NAMESPACE.fullmatch(value) or len(value) > 63:
        raise OperationRefused(f"'{value}' is not a valid namespace name")
    return value


def _check_replicas(value: str) -> int:
    # isdigit alone also takes digits int() refuses ("²") or other scripts' digits.
    if not (value.isascii() and value.isdigit()):
        raise OperationRefused(f"--replicas must be a whole number, not '{value}'")
    replicas = int(value)
    if replicas > MAX_REPLICAS:
        raise OperationRefused(f"--replicas={replicas} is above the limit of {MAX_REPLICAS}")
    return replicas


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value) or len(value) > 253:
        raise OperationRefused(f"'{value}' is not a valid resource name")
    return value


def _workload(words: list[str], verb: str) -> tuple[str, str]:
    """Accept ``kind/name`` or ``kind name``, as kubectl does."""
    if len(words) == 1 and "/" in words[0]:
        kind, _, name = words[0].partition("/")
    elif len(words) == 2 and "/" not in words[0]:
        kind, name = words
    else:
        raise OperationRefused(f"{verb} needs exactly one target such as deployment/NAME")
    return kind.lower(), _check_name(name)


def _parse_rollout(words: list[str], namespace: str) -> Operation:
    if not words or words[0] not in ("restart", "undo"):
        raise OperationRefused("only 'rollout restart' and 'rollout undo' are allowed")
    sub = words[0]
    kind, name = _workload(words[1:], f"rollout {sub}")
    target = WORKLOAD_KINDS.get(kind)
    if target is None:
        raise OperationRefused(
            f"rollout {sub} works on deployments, statefulsets and daemonsets, not '{kind}'"
        )
    op_kind = OperationKind.ROLLOUT_RESTART if sub == "restart" else OperationKind.ROLLOUT_UNDO
    return Operation(op_kind, target, name, namespace)


def _parse_scale(words: list[str], namespace: str, replicas: int | None) -> Operation:
    kind, name = _workload(words, "scale")
    target = WORKLOAD_KINDS.get(kind)
    if target not in SCALABLE:
        raise OperationRefused(f"scale works on deployments and statefulsets, not '{kind}'")
    if replicas is None:
        raise OperationRefused("scale needs --replicas=N")
    return Operation(OperationKind.SCALE, target, name, namespace, replicas)


def _parse_delete(words: list[str], namespace: str) -> Operation:
    kind, name = _workload(words, "delete")
    if kind not in ("pod", "pods", "po"):
        raise OperationRefused(f"only pods may be deleted, not '{kind}'")
    return Operation(OperationKind.DELETE_POD, "pod", name, namespace)


def _parse_node(verb: str, words: list[str]) -> Operation:
    if len(words) == 1 and "/" in words[0]:
        kind, _, name = words[0].partition("/")
        if kind not in ("node", "nodes", "no"):
            raise OperationRefused(f"{verb} works on nodes, not '{kind}'")
    elif len(words) == 1:
        name = words[0]
    else:
        raise OperationRefused(f"{verb} needs exactly one node name")
    kind_ = OperationKind.CORDON if verb == "cordon" else OperationKind.UNCORDON
    return Operation(kind_, "node", _check_name(name))
