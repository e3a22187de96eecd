"""A stateful loopback stand-in for the Kubernetes API server, for opsgate's tests.

Why it exists: opsgate's remediations (rollout restart, undo, scale, delete pod, cordon) are only
trustworthy if they are exercised through the *real* kubernetes_asyncio client, with its real
URL building, content-type choice and error mapping. A mock of the client would test our
assumptions about the client instead. So this module serves the HTTP API itself, on 127.0.0.1,
and is strict where the real API server is strict: it decodes bodies against the same OpenAPI
schema the client is generated from, answers with real ``Status`` objects, applies the three patch
flavours with their real semantics, and runs just enough of the deployment, replica-set,
statefulset and daemonset controllers for revisions, pods and rollout status to change the way
``kubectl rollout`` expects. Faults (status codes, dropped connections, hangs) can be injected per
request so retry logic can be tested against the same stack, and requests can be held before
they are carried out or after, with their answer held back (``hold``, ``hold_answer``), so a crash
test can kill the client at exactly that point.

Deliberate limits (each answered honestly rather than faked): no watch, no server-side apply, no
protobuf/YAML bodies, no status subresources, no deletecollection, no paused rollouts and no
revision-history pruning.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import kubernetes_asyncio.client.models as k8s_models
from aiohttp import web

from opsgate.sandbox.loopback import LoopbackServer
from opsgate.sandbox.request_holds import HeldRequest, Hold, pass_holds

Obj = dict[str, Any]
RolloutMode = Literal["immediate", "manual", "stuck"]
Fault = int | Literal["drop", "timeout"]

_ROLLOUT_MODES: tuple[RolloutMode, ...] = ("immediate", "manual", "stuck")
_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand
_HASH_LABEL = "pod-template-hash"
_REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
_REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
_CR_HASH_LABEL = "controller.kubernetes.io/hash"
_POD_REVISION_LABEL = "controller-revision-hash"

_SMP = "application/strategic-merge-patch+json"
_MERGE_PATCH = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_PATCH_TYPES = (_JSON_PATCH, _MERGE_PATCH, "application/apply-patch+yaml", _SMP)
_BODY_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")


# --------------------------------------------------------------------------- resources


@dataclasses.dataclass(frozen=True)
class _Resource:
    """What the fake needs to know about one REST resource (as discovery would say)."""

    plural: str
    kind: str
    group: str
    model: str  # kubernetes_asyncio model class: the OpenAPI schema bodies are decoded against
    namespaced: bool = True
    spec_generation: bool = False  # metadata.generation tracks spec changes
    scalable: bool = False
    status_subresource: bool = True  # writes to the main resource cannot change status
    returns_deleted_object: bool = False  # DELETE answers with the object, not a Status

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``pods``: how errors name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """``Deployment.apps`` / ``Pod``: how validation errors name the kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


_RESOURCES: dict[str, _Resource] = {
    r.plural: r
    for r in (
        _Resource(
            "deployments", "Deployment", "apps", "V1Deployment", spec_generation=True, scalable=True
        ),
        _Resource(
            "statefulsets",
            "StatefulSet",
            "apps",
            "V1StatefulSet",
            spec_generation=True,
            scalable=True,
        ),
        _Resource("daemonsets", "DaemonSet", "apps", "V1DaemonSet", spec_generation=True),
        _Resource(
            "replicasets", "ReplicaSet", "apps", "V1ReplicaSet", spec_generation=True, scalable=True
        ),
        _Resource(
            "controllerrevisions",
            "ControllerRevision",
            "apps",
            "V1ControllerRevision",
            status_subresource=False,
        ),
        _Resource("pods", "Pod", "", "V1Pod", returns_deleted_object=True),
        _Resource("nodes", "Node", "", "V1Node", namespaced=False),
        _Resource(
            "namespaces",
            "Namespace",
            "",
            "V1Namespace",
            namespaced=False,
            returns_deleted_object=True,
        ),
    )
}
_BY_KIND = {r.kind: r for r in _RESOURCES.values()}
_WORKLOADS = ("deployments", "statefulsets", "daemonsets", "replicasets")

# Fields the fake lets clients filter on, as the real registries do (anything else is a 400).
_FIELD_SELECTORS: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
    ),
    "nodes": ("spec.unschedulable",),
    "replicasets": ("status.replicas",),
    "namespaces": ("status.phase",),
}

# Strategic-merge-patch metadata from the Go types (patchMergeKey / patchStrategy tags).
_SMP_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "ownerReferences": "uid",
}
_SMP_MERGE_PRIMITIVES = {"finalizers"}

# Go resource.Quantity fields: the schema says string, JSON numbers are accepted and normalised.
_QUANTITY_FIELDS = {"limits", "requests", "capacity", "allocatable", "sizeLimit"}

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_STS_MUTABLE_SPEC = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


# --------------------------------------------------------------------------- errors


class ApiStatusError(Exception):
    """A request the real API server would refuse; carries the ``Status`` body it would send.

    The public helpers (``add_deployment`` & co.) raise it too, so a test that builds an invalid
    fixture fails with the same message a client would have seen.
    """

    def __init__(self, status: Obj, headers: dict[str, str] | None = None) -> None:
        super().__init__(status.get("message", ""))
        self.status = status
        self.headers = headers or {}

    @property
    def code(self) -> int:
        return int(self.status["code"])


def _status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    body["code"] = code
    return body


def _error(code: int, reason: str, message: str, details: Obj | None = None) -> ApiStatusError:
    return ApiStatusError(_status(code, reason, message, details))


def _details(res: _Resource, name: str) -> Obj:
    details: Obj = {"name": name} if name else {}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    return details


def _not_found(res: _Resource, name: str) -> ApiStatusError:
    return _error(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def _no_route() -> ApiStatusError:
    cause = {"reason": "UnexpectedServerResponse", "message": "404 page not found"}
    return _error(
        404, "NotFound", "the server could not find the requested resource", {"causes": [cause]}
    )


def _conflict(res: _Resource, name: str, why: str) -> ApiStatusError:
    return _error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
        _details(res, name),
    )


_STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def _bad_request(message: str) -> ApiStatusError:
    return _error(400, "BadRequest", message)


def _method_not_allowed() -> ApiStatusError:
    return _error(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


class _GoLiteral(str):
    """A value already rendered the Go way, printed verbatim in field errors."""


def _go_value(value: Any) -> str:
    """Roughly how Go's ``%#v`` prints a value inside a field error."""
    if isinstance(value, _GoLiteral):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class _FieldError:
    """One entry of a ``field.ErrorList``: rendered exactly like apimachinery renders it."""

    field: str
    kind: Literal["Invalid", "Required", "Forbidden", "Duplicate", "NotSupported"]
    detail: str = ""
    value: Any = None

    @property
    def body(self) -> str:
        if self.kind == "Invalid":
            return f"Invalid value: {_go_value(self.value)}: {self.detail}"
        if self.kind == "Required":
            return f"Required value: {self.detail}" if self.detail else "Required value"
        if self.kind == "Duplicate":
            return f"Duplicate value: {_go_value(self.value)}"
        if self.kind == "NotSupported":
            return f"Unsupported value: {_go_value(self.value)}: supported values: {self.detail}"
        return f"Forbidden: {self.detail}"

    def cause(self) -> Obj:
        return {"reason": f"FieldValue{self.kind}", "message": self.body, "field": self.field}


def _invalid(
    group_kind: str, name: str, errs: list[_FieldError], group: str = ""
) -> ApiStatusError:
    rendered = [f"{e.field}: {e.body}" for e in errs]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    kind = group_kind.split(".", 1)[0]
    details: Obj = {"name": name} if name else {}
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    details["causes"] = [e.cause() for e in errs]
    return _error(422, "Invalid", f'{group_kind} "{name}" is invalid: {summary}', details)


def _options_invalid(verb_options: str, errs: list[_FieldError]) -> ApiStatusError:
    return _invalid(f"{verb_options}.meta.k8s.io", "", errs, group="meta.k8s.io")


def _rejected(message: str) -> ApiStatusError:
    """apimachinery's NewGenericServerResponse(422): how JSON-patch failures come back."""
    return _error(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]},
    )


_FAULT_STATUS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden: the server does not allow access to the requested resource"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", f"Operation cannot be fulfilled: {_STALE}"),
    410: ("Expired", "too old resource version"),
    415: ("UnsupportedMediaType", "the server does not support the request's media type"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: (
        "Timeout",
        "Timeout: request did not complete within requested timeout - context deadline exceeded",
    ),
}


# --------------------------------------------------------------------------- schema decoding


class _DecodeError(Exception):
    """A JSON value of the wrong type for the Go field it lands in."""


_LIST_TYPE = re.compile(r"list\[(.+)\]")
_DICT_TYPE = re.compile(r"dict\(str, (.+)\)")
_GO_TYPES = {
    "str": "string",
    "int": "int32",
    "bool": "bool",
    "float": "float64",
    "datetime": "v1.Time",
}


@functools.cache
def _model_fields(model: str) -> dict[str, str]:
    """JSON key -> OpenAPI type of one generated model, e.g. ``replicas`` -> ``int``."""
    cls = getattr(k8s_models, model)
    return {cls.attribute_map[attr]: typ for attr, typ in cls.openapi_types.items()}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _go_struct(model: str) -> str:
    return re.sub(r"^V\d+((alpha|beta)\d+)?", "", model)


def _decode(
    value: Any, typ: str, path: str, parent: str, unknown: list[str], *, quantity: bool = False
) -> Any:
    """Check ``value`` against an OpenAPI type and return it normalised like a Go round trip.

    Unknown fields are dropped and reported in ``unknown`` (the server's Warn behaviour), JSON
    ``null`` fields disappear (Go's omitempty), quantities given as numbers become strings.
    """

    def wrong(go_type: str) -> _DecodeError:
        return _DecodeError(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{_go_struct(parent)}.{path} of type {go_type}"
        )

    if typ == "object" or value is None:  # null list items decode to Go's zero value
        return copy.deepcopy(value)
    if m := _LIST_TYPE.fullmatch(typ):
        if not isinstance(value, list):
            raise wrong(f"[]{_GO_TYPES.get(m[1], m[1])}")
        return [
            _decode(v, m[1], f"{path}[{i}]", parent, unknown, quantity=quantity)
            for i, v in enumerate(value)
        ]
    if m := _DICT_TYPE.fullmatch(typ):
        if not isinstance(value, dict):
            raise wrong(f"map[string]{_GO_TYPES.get(m[1], m[1])}")
        return {
            k: _decode(v, m[1], f"{path}.{k}", parent, unknown, quantity=quantity)
            for k, v in value.items()
            if v is not None
        }
    if typ == "str":
        if quantity and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise wrong("string")
        return value
    if typ == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong("int32")
        return value
    if typ == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise wrong("float64")
        return value
    if typ == "bool":
        if not isinstance(value, bool):
            raise wrong("bool")
        return value
    if typ == "datetime":
        if not isinstance(value, str):
            raise wrong("v1.Time")
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise _DecodeError(
                f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse'
            ) from exc
        return value
    if not isinstance(value, dict):
        raise wrong(_go_struct(typ))
    fields = _model_fields(typ)
    out: Obj = {}
    for key, item in value.items():
        sub = f"{path}.{key}" if path else key
        if key not in fields:
            unknown.append(sub)
        elif item is not None:
            out[key] = _decode(
                item, fields[key], sub, typ, unknown, quantity=key in _QUANTITY_FIELDS
            )
    return out


# --------------------------------------------------------------------------- patches


def _smp_apply(original: Obj, patch: Obj) -> Obj:
    """Apply a strategic merge patch (the subset of directives kubectl and controllers send)."""
    result = _smp_map(original, patch)
    if result is None:
        raise _bad_request("a strategic merge patch cannot delete the whole object")
    return result


def _smp_map(original: Obj, patch: Obj) -> Obj | None:
    """Merge ``patch`` into a map; ``None`` means the map itself is deleted (``$patch: delete``)."""
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _smp_map({}, {k: v for k, v in patch.items() if k != "$patch"})
    if directive not in (None, "merge"):
        raise _bad_request(f"Unknown patch type: {directive} in map: {json.dumps(patch)}")
    result = copy.deepcopy(original)
    orders: dict[str, list[Any]] = {}
    retain = patch.get("$retainKeys")
    if retain is not None:
        if not isinstance(retain, list):
            raise _bad_request("$retainKeys must be a list of keys")
        for key in patch:
            if not key.startswith("$") and key not in retain:
                raise _rejected("The content of the patch doesn't match the retainKeys list")
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if key.startswith("$"):
            raise _bad_request(f"unsupported strategic merge patch directive: {key}")
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            current = result.get(key)
            current_list = current if isinstance(current, list) else []
            if key in _SMP_MERGE_KEYS:
                result[key] = _smp_list(current_list, value, _SMP_MERGE_KEYS[key])
            elif key in _SMP_MERGE_PRIMITIVES:
                result[key] = current_list + [v for v in value if v not in current_list]
            else:
                result[key] = copy.deepcopy(value)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _smp_order(result[field], order, _SMP_MERGE_KEYS.get(field))
    return result


def _smp_list(original: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    """Merge a list of maps element-wise by ``merge_key`` (e.g. containers by ``name``)."""
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        original, patch = (
            [],
            [e for e in patch if not (isinstance(e, dict) and e.get("$patch") == "replace")],
        )
    result = copy.deepcopy(original)
    for element in patch:
        if not isinstance(element, dict):
            raise _bad_request(f"list of maps with merge key {merge_key} got element {element!r}")
        if merge_key not in element:
            # The real server lets this error escape un-typed: a 500 without a reason.
            raise _error(
                500,
                "",
                f"map: {json.dumps(element)} does not contain declared merge key: {merge_key}",
            )
        index = next(
            (
                i
                for i, e in enumerate(result)
                if isinstance(e, dict) and e.get(merge_key) == element[merge_key]
            ),
            None,
        )
        merged = _smp_map(result[index] if index is not None else {}, element)
        if merged is None:  # {"name": ..., "$patch": "delete"} removes the element
            if index is not None:
                del result[index]
        elif index is None:
            result.append(merged)
        else:
            result[index] = merged
    return result


def _smp_order(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """Honour ``$setElementOrder``: listed elements first, in that order, the rest after."""

    def ident(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    listed = sorted((i for i in items if ident(i) in wanted), key=lambda i: wanted.index(ident(i)))
    return listed + [i for i in items if ident(i) not in wanted]


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality for the ``test`` op: unlike Python's, ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


class _PatchFailed(Exception):
    """A JSON patch that is well formed but does not apply to the document."""


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _PatchFailed(f"invalid JSON pointer: {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]


def _index(token: str, size: int, path: str, *, end_ok: bool) -> int:
    if token == "-" and end_ok:
        return size
    if not re.fullmatch(r"0|[1-9][0-9]*", token) or int(token) > (size if end_ok else size - 1):
        raise _PatchFailed(f"index out of range or invalid: {path}")
    return int(token)


def _jp_parent(doc: Any, tokens: list[str], path: str, op: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), path, end_ok=False)]
        else:
            raise _PatchFailed(f"{op} operation does not apply: doc is missing path: {path}")
    return node


def _jp_get(doc: Any, path: Any, op: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _jp_parent(doc, tokens, path, op)
    if isinstance(parent, dict) and tokens[-1] in parent:
        return parent[tokens[-1]]
    if isinstance(parent, list):
        return parent[_index(tokens[-1], len(parent), path, end_ok=False)]
    raise _PatchFailed(f"{op} operation does not apply: doc is missing path: {path}")


def _jp_add(doc: Any, path: Any, value: Any, *, replace: bool = False) -> Any:
    """``add`` (insert into lists) or ``replace`` (target must exist); returns the new doc."""
    op = "replace" if replace else "add"
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _jp_parent(doc, tokens, path, op)
    last = tokens[-1]
    if isinstance(parent, dict) and (last in parent or not replace):
        parent[last] = value
    elif isinstance(parent, list) and replace:
        parent[_index(last, len(parent), path, end_ok=False)] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), path, end_ok=True), value)
    else:
        raise _PatchFailed(f"{op} operation does not apply: doc is missing path: {path}")
    return doc


def _jp_remove(doc: Any, path: Any, op: str = "remove") -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _PatchFailed(f"{op} operation cannot remove the whole document")
    parent = _jp_parent(doc, tokens, path, op)
    if isinstance(parent, dict) and tokens[-1] in parent:
        return parent.pop(tokens[-1])
    if isinstance(parent, list):
        return parent.pop(_index(tokens[-1], len(parent), path, end_ok=False))
    raise _PatchFailed(f"{op} operation does not apply: doc is missing path: {path}")


def _json_patch(document: Obj, operations: Any) -> Any:
    """RFC 6902 JSON patch; structural problems are 400s, failures to apply are 422s."""
    if not isinstance(operations, list):
        raise _bad_request(
            f"json: cannot unmarshal {_json_kind(operations)} into Go value of type jsonpatch.Patch"
        )
    for operation in operations:
        if not isinstance(operation, dict):
            raise _bad_request(
                f"json: cannot unmarshal {_json_kind(operation)} into Go value of "
                "type jsonpatch.Operation"
            )
    doc: Any = copy.deepcopy(document)
    try:
        for operation in operations:
            op, path = operation.get("op"), operation.get("path")
            if op in ("add", "replace", "test") and "value" not in operation:
                raise _PatchFailed(f"{op} operation has no value: {path}")
            value = copy.deepcopy(operation.get("value"))
            if op == "add":
                doc = _jp_add(doc, path, value)
            elif op == "remove":
                _jp_remove(doc, path)
            elif op == "replace":
                doc = _jp_add(doc, path, value, replace=True)
            elif op in ("move", "copy"):
                source = operation.get("from")
                if (
                    op == "move"
                    and isinstance(source, str)
                    and isinstance(path, str)
                    and path.startswith(source + "/")
                ):
                    raise _PatchFailed(f"move operation cannot move {source} into itself")
                moved = (
                    _jp_remove(doc, source, op)
                    if op == "move"
                    else copy.deepcopy(_jp_get(doc, source, op))
                )
                doc = _jp_add(doc, path, moved)
            elif op == "test":
                try:
                    actual = _jp_get(doc, path, "test")
                except _PatchFailed:
                    if value is not None:  # like evanphx/json-patch: missing equals null
                        raise
                    actual = None
                if not _json_equal(actual, value):
                    raise _PatchFailed(f"testing value {path} failed: test failed")
            else:
                raise _PatchFailed(f"Unexpected kind: {op}")
    except _PatchFailed as exc:
        raise _rejected(str(exc)) from exc
    return doc


# --------------------------------------------------------------------------- selectors


@dataclasses.dataclass(frozen=True)
class _Requirement:
    key: str
    op: Literal["=", "!=", "in", "notin", "exists", "!"]
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        return present if self.op == "exists" else not present

    def render(self) -> str:
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        return self.key if self.op == "exists" else f"!{self.key}"


_KEY = r"(?P<key>[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?)"
_VALUE = r"(?P<value>(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?)"


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def _parse_label_selector(text: str) -> list[_Requirement]:
    """Parse a ``labelSelector`` query (equality and set-based forms)."""
    if not text.strip():
        return []
    requirements = []
    for part in _split_top_level(text):
        if m := re.fullmatch(rf"{_KEY}\s*(?P<op>==|=|!=)\s*{_VALUE}", part):
            op: Literal["=", "!="] = "!=" if m["op"] == "!=" else "="
            requirements.append(_Requirement(m["key"], op, (m["value"],)))
        elif m := re.fullmatch(rf"{_KEY}\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)", part):
            values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append(
                _Requirement(m["key"], "in" if m["op"] == "in" else "notin", values)
            )
        elif m := re.fullmatch(rf"(?P<not>!?)\s*{_KEY}", part):
            requirements.append(_Requirement(m["key"], "!" if m["not"] else "exists"))
        else:
            raise _bad_request(
                f"unable to parse requirement: found '{part}', expected: "
                "identifier, '=', '!=', 'in', 'notin' or end of string"
            )
    return requirements


def _selector_requirements(selector: Obj) -> list[_Requirement]:
    """A ``LabelSelector`` object (matchLabels + matchExpressions) as requirements."""
    reqs = [_Requirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops: dict[str, Literal["in", "notin", "exists", "!"]] = {
        "In": "in",
        "NotIn": "notin",
        "Exists": "exists",
        "DoesNotExist": "!",
    }
    for expr in selector.get("matchExpressions") or []:
        reqs.append(
            _Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        )
    return sorted(reqs, key=lambda r: r.key)


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
    return labels


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def _parse_field_selector(res: _Resource, text: str) -> list[tuple[str, bool, str]]:
    """``a=b,c!=d`` -> (field, equal?, value), refusing fields the registry does not index."""
    allowed = ("metadata.name", "metadata.namespace", *_FIELD_SELECTORS.get(res.plural, ()))
    terms = []
    for part in (p for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if m[1] not in allowed:
            raise _bad_request(f"field label not supported: {m[1]}")
        terms.append((m[1], m[2] != "!=", m[3]))
    return terms


# --------------------------------------------------------------------------- small helpers


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.setdefault("metadata", {})
    return meta


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _without_hash_label(template: Obj) -> Obj:
    stripped = copy.deepcopy(template)
    labels = stripped.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(_HASH_LABEL, None)
    return stripped


def _template_hash(template: Obj) -> str:
    """A name suffix like the controllers' (a 32-bit hash, SafeEncodeString-ed)."""
    value = int.from_bytes(hashlib.sha256(_canonical(_without_hash_label(template))).digest()[:4])
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in str(value))


def _requests_dry_run(query: Mapping[str, str], body: Any) -> bool:
    """Whether a request asks for a dry run, in its query or (DELETE) in its DeleteOptions."""
    in_body = body.get("dryRun") if isinstance(body, dict) else None
    return query.get("dryRun") == "All" or (isinstance(in_body, list) and "All" in in_body)


def _revision(obj: Obj) -> int:
    return int(_meta(obj).get("annotations", {}).get(_REVISION_ANNOTATION, "0"))


def _controller_ref(res: _Resource, owner: Obj) -> Obj:
    return {
        "apiVersion": res.api_version,
        "kind": res.kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _pod_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def _condition(
    kind: str, status: bool, reason: str = "", message: str = "", *, update_time: bool = False
) -> Obj:
    now = _now()
    cond: Obj = {"type": kind, "status": "True" if status else "False"}
    if update_time:
        cond["lastUpdateTime"] = now
    cond["lastTransitionTime"] = now
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _keep_transition_times(new: list[Obj], old: list[Obj]) -> list[Obj]:
    """Conditions that did not change keep their timestamps, like the controllers do."""
    previous = {c["type"]: c for c in old}
    kept = []
    for cond in new:
        before = previous.get(cond["type"])
        if before and all(before.get(k) == cond.get(k) for k in ("status", "reason", "message")):
            cond = before
        kept.append(cond)
    return kept


def _nonzero(**counts: int) -> Obj:
    """Status counters are ``omitempty`` in Go: zeros are simply absent."""
    return {k: v for k, v in counts.items() if v}


def _max_unavailable(deployment: Obj) -> int:
    """``maxUnavailable`` resolved against ``spec.replicas`` (percentages round down)."""
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") != "RollingUpdate":
        return 0
    value = strategy.get("rollingUpdate", {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return int(deployment["spec"]["replicas"] * int(value[:-1]) // 100)
    return int(value)


def _default_pod_spec(spec: Obj) -> None:
    """The pod-spec defaults the API server fills in (so templates round-trip like real ones)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        image = str(container.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        container.setdefault(
            "imagePullPolicy", "IfNotPresent" if tagged or "@" in image else "Always"
        )
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})


# --------------------------------------------------------------------------- public records


@dataclasses.dataclass
class RecordedRequest:
    """One request as the fake saw it, so tests can assert on what the client actually sent."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any  # decoded JSON, or None when absent or not JSON
    status: int | None = None  # None: the connection was dropped or the client gave up
    dry_run: bool = False
    at: float = dataclasses.field(default_factory=time.time)  # arrival


@dataclasses.dataclass
class _Injected:
    method: str
    path: re.Pattern[str]
    fault: Fault
    remaining: int
    delay: float
    retry_after: int
    served: bool
    dry_run: bool | None


@dataclasses.dataclass(frozen=True)
class _DecodedBody:
    obj: Obj
    unknown: list[str]  # unknown fields to warn about


@dataclasses.dataclass(frozen=True)
class _Route:
    res: _Resource
    namespace: str  # "" for cluster-scoped resources and all-namespace lists
    name: str | None
    subresource: str | None


# --------------------------------------------------------------------------- the fake


# What VersionApi.get_code() reads: how a client checks that the API server answers at all.
SERVER_VERSION: Obj = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class FakeKube(LoopbackServer):
    """The fake API server: an object store, the HTTP surface, simulated controllers, faults.

    Everything runs on the test's event loop; handlers never await between reading and writing
    the store, so every request is atomic just as it is against etcd.
    """

    def __init__(self, token: str = "test-token", *, user: str = "opsgate") -> None:
        self.token = token
        self.user = user  # the identity RBAC denials are reported for
        self.requests: builtins.list[RecordedRequest] = []
        self._store: dict[str, dict[tuple[str, str], Obj]] = {p: {} for p in _RESOURCES}
        self._rv = 1000
        self._faults: builtins.list[_Injected] = []
        self._holds: builtins.list[Hold] = []  # before the request is carried out
        self._answer_holds: builtins.list[Hold] = []  # after, before it is answered
        self._denials: builtins.list[tuple[str, str, str | None]] = []
        self._default_mode: RolloutMode = "immediate"
        self._modes: dict[tuple[str, str, str], RolloutMode] = {}
        self._deadline_exceeded: set[tuple[str, str]] = set()
        self._random = random.Random(0)
        self._pod_ips = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = asyncio.Event()
        for namespace in ("default", "kube-system"):
            self._ensure_namespace(namespace)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port (only loopback: tests must never leave the box)."""
        if self._runner is not None:
            raise RuntimeError("FakeKube already started")
        self._closing = asyncio.Event()  # created on the loop that serves it
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a "timeout" fault ends when the client gives up, not later.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._closing.set()
        for hold in self._holds + self._answer_holds:
            hold.abandon()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeKube not started")
        return f"http://127.0.0.1:{self._port}"

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig pointing at this server with this token; returns ``path``.

        JSON is valid YAML, so no YAML dependency is needed to produce it.
        """
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.base_url}}],
            "users": [{"name": self.user, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": self.user, "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
        return path

    # ------------------------------------------------------------------ test controls

    def deny(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Make RBAC refuse ``verb`` on ``resource`` (``"deployments/scale"`` for a subresource,
        ``"*"`` for any) in ``namespace`` (``None``: everywhere) with a real 403."""
        if verb != "*" and verb not in _VERBS:
            raise ValueError(f"unknown verb {verb!r}; expected one of {_VERBS} or '*'")
        if resource != "*":
            self._resource(resource.split("/", 1)[0])
        self._denials.append((verb, resource, namespace))

    def inject(
        self,
        method: str,
        path_regex: str,
        fault: Fault,
        *,
        count: int = 1,
        delay: float = 0.0,
        retry_after: int = 1,
        served: bool = False,
        dry_run: bool | None = None,
    ) -> None:
        """Make the next ``count`` requests matching ``method`` (or ``"*"``) and ``path_regex``
        (searched in the URL path) fail.

        ``fault`` is an HTTP status answered with a proper ``Status`` body (429 also carries
        ``Retry-After: retry_after``), ``"drop"`` to close the connection without a response, or
        ``"timeout"`` to hold the request ``delay`` seconds (0: until the client gives up) and then
        serve it normally. For status and drop faults ``delay`` is waited before failing.

        ``served=True`` handles the request first, so a write takes effect, and only then fails
        it: the answer is lost on the way back (a gateway's 504, a dropped connection), which is
        what a client must survive without repeating the change. ``dry_run`` limits the fault to
        dry-run requests (True) or to real ones (False); None matches both.
        """
        if isinstance(fault, int) and fault not in _FAULT_STATUS:
            raise ValueError(f"no Status template for {fault}; known: {sorted(_FAULT_STATUS)}")
        if fault not in ("drop", "timeout") and not isinstance(fault, int):
            raise ValueError(f"unknown fault {fault!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        self._faults.append(
            _Injected(
                method.upper(),
                re.compile(path_regex),
                fault,
                count,
                delay,
                retry_after,
                served,
                dry_run,
            )
        )

    def hold(
        self, method: str, path_regex: str, *, dry_run: bool | None = None, count: int = 1
    ) -> Hold:
        """Keep the next ``count`` matching requests in flight, not yet carried out, until
        ``release()``; a held request whose client went away is dropped and never carried out.

        Matching is as for :meth:`inject`; ``dry_run`` True or False picks only the server-side
        dry runs (``dryRun=All``) or only the real calls, None either. Holds come before injected
        faults: a released request then meets the fault.
        """
        matches = self._hold_matcher(method, path_regex, dry_run)
        hold = Hold(f"{method} {path_regex}", matches, count)
        self._holds.append(hold)
        return hold

    def hold_answer(
        self, method: str, path_regex: str, *, dry_run: bool | None = None, count: int = 1
    ) -> Hold:
        """Carry out the next ``count`` matching requests that succeed, then keep their answers
        until ``release()`` or until the client goes away: the change is visible to later reads
        while the client still waits, and is kept if the answer never reaches it. Refusals are
        answered at once and do not count. Matching is as for :meth:`hold`."""
        matches = self._hold_matcher(method, path_regex, dry_run)
        hold = Hold(f"answer to {method} {path_regex}", matches, count)
        self._answer_holds.append(hold)
        return hold

    @staticmethod
    def _hold_matcher(
        method: str, path_regex: str, dry_run: bool | None
    ) -> Callable[[HeldRequest], bool]:
        wanted, path = method.upper(), re.compile(path_regex)

        def matches(request: HeldRequest) -> bool:
            return (
                wanted in ("*", request.method)
                and path.search(request.path) is not None
                and dry_run in (None, request.dry_run)
            )

        return matches

    @staticmethod
    def _held(record: RecordedRequest) -> HeldRequest:
        # A DELETE may ask for a dry run in its DeleteOptions body rather than in the query.
        body_dry_run = isinstance(record.body, dict) and record.body.get("dryRun") == ["All"]
        return HeldRequest(
            record.method, record.path, record.query, dry_run=record.dry_run or body_dry_run
        )

    def set_rollout_mode(
        self,
        mode: RolloutMode,
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        """How fast workloads converge: globally (no kind) or for one object.

        ``immediate``: new pods are Ready and status is current right after every change.
        ``manual``: pods are created but not Ready and no status changes until ``converge``.
        ``stuck``: like manual, but the controller does report the rollout as in progress, and
        ``progress_deadline_exceeded`` can then mark it failed.
        """
        if mode not in _ROLLOUT_MODES:
            raise ValueError(f"unknown rollout mode {mode!r}")
        if kind is None:
            if namespace is not None or name is not None:
                raise ValueError("namespace/name need a kind")
            self._default_mode = mode
            return
        if kind not in _WORKLOADS or name is None:
            raise ValueError(f"per-object modes need one of {_WORKLOADS} and a name")
        self._modes[(kind, namespace or "", name)] = mode

    def converge(self, kind: str, namespace: str, name: str) -> None:
        """Finish the rollout of one workload now, whatever its mode: all pods of the current
        revision Ready, old ones gone, status current."""
        top = self._top_controller(kind, self._require(kind, namespace, name))
        self._deadline_exceeded.discard(_key(top[1]))
        self._reconcile(top, force=True)

    def progress_deadline_exceeded(self, kind: str, namespace: str, name: str) -> None:
        """Report a deployment's rollout as failed (Progressing=False, ProgressDeadlineExceeded),
        as the controller does after ``spec.progressDeadlineSeconds``."""
        if kind != "deployments":
            raise ValueError("only deployments have a progress deadline")
        deployment = self._require(kind, namespace, name)
        self._deadline_exceeded.add((namespace, name))
        self._deployment_status(deployment, self._deployment_revision(deployment))

    # ------------------------------------------------------------------ fixtures

    def add_deployment(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int = 1,
        image: str = "app:1",
        labels: dict[str, str] | None = None,
    ) -> Obj:
        """Create a deployment as a user would; the controller gives it RS revision 1 and pods."""
        spec = self._workload_spec(name, image, labels)
        spec["replicas"] = replicas
        return self._add("deployments", namespace, name, spec, labels)

    def add_statefulset(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int = 1,
        image: str = "app:1",
        labels: dict[str, str] | None = None,
    ) -> Obj:
        """Create a statefulset; the controller records ControllerRevision 1 and pods name-0..."""
        spec = self._workload_spec(name, image, labels)
        spec.update(replicas=replicas, serviceName=name)
        return self._add("statefulsets", namespace, name, spec, labels)

    def add_daemonset(
        self,
        namespace: str,
        name: str,
        *,
        image: str = "app:1",
        labels: dict[str, str] | None = None,
    ) -> Obj:
        """Create a daemonset; it runs one pod per node (so add nodes to see pods)."""
        return self._add(
            "daemonsets", namespace, name, self._workload_spec(name, image, labels), labels
        )

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        owner: Obj | None = None,
        ready: bool = True,
    ) -> Obj:
        """Create a running pod; ``owner`` is the owning object (as returned by ``get``/``add_*``)
        and becomes its controller ownerReference."""
        self._ensure_namespace(namespace)
        metadata: Obj = {"name": name, "labels": dict(labels or {"app": name})}
        if owner is not None:
            owner_res = _BY_KIND[owner["kind"]]
            metadata["ownerReferences"] = [_controller_ref(owner_res, owner)]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }
        created = self._create(_RESOURCES["pods"], namespace, body, dry_run=False)
        pod = self._store["pods"][_key(created)]
        self._set_pod_status(pod, ready)
        self._save(_RESOURCES["pods"], pod)
        return copy.deepcopy(pod)

    def add_node(self, name: str, *, labels: dict[str, str] | None = None) -> Obj:
        """Create a Ready, schedulable node."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
        }
        self._create(_RESOURCES["nodes"], "", body, dry_run=False)
        return copy.deepcopy(self._require("nodes", None, name))

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """A deep copy of a stored object, or None (``kind`` is the plural resource name)."""
        res = self._resource(kind)
        obj = self._store[res.plural].get((namespace or "" if res.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: str, namespace: str | None = None) -> builtins.list[Obj]:
        """Deep copies of all objects of a kind, optionally in one namespace, sorted by name."""
        res = self._resource(kind)
        return [
            copy.deepcopy(o)
            for (ns, _), o in sorted(self._store[res.plural].items())
            if namespace is None or ns == namespace
        ]

    def set_image(self, kind: str, namespace: str, name: str, image: str) -> None:
        """Set every container's image, like ``kubectl set image ... *=image``; starts a rollout."""
        res = self._resource(kind)
        old = self._require(kind, namespace, name)
        new = copy.deepcopy(old)
        spec = new["spec"]["template"]["spec"] if "template" in new.get("spec", {}) else new["spec"]
        for container in spec.get("containers", []):
            container["image"] = image
        self._update(res, old, new, dry_run=False)

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        """Set ``spec.replicas`` as another client would (``kubectl scale``, an autoscaler)."""
        res = self._resource(kind)
        old = self._require(kind, namespace, name)
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        self._update(res, old, new, dry_run=False)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete an object as another client would (``kubectl delete``); what it owns goes
        with it, as the garbage collector's background deletion does."""
        res = self._resource(kind)
        self._delete(res, namespace or "" if res.namespaced else "", name, {}, dry_run=False)

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        query = dict(request.query.items())
        content_type = request.headers.get("Content-Type")
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=query,
            content_type=content_type.split(";")[0].strip().lower() if content_type else None,
            body=body,
            dry_run=_requests_dry_run(query, body),
        )
        self.requests.append(record)
        await pass_holds(self._holds, self._held(record), request)
        fault = self._take_fault(request.method, request.path, record.dry_run)
        served = self._answer(request, raw, record) if fault is not None and fault.served else None
        if fault is not None and fault.fault == "timeout":
            await self._hold(fault.delay or None)
        elif fault is not None:
            await self._hold(fault.delay)
            if fault.fault == "drop":
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError  # nothing is written: the client sees EOF
            assert isinstance(fault.fault, int)
            reason, message = _FAULT_STATUS[fault.fault]
            details = {"retryAfterSeconds": fault.retry_after} if fault.fault == 429 else None
            headers = {"Retry-After": str(fault.retry_after)} if fault.fault == 429 else {}
            response = self._respond(
                fault.fault, _status(fault.fault, reason, message, details), headers
            )
            record.status = response.status
            return response
        response = served if served is not None else self._answer(request, raw, record)
        if response.status < 300:
            await pass_holds(self._answer_holds, self._held(record), request)
        record.status = response.status
        return response

    def _answer(self, request: web.Request, raw: bytes, record: RecordedRequest) -> web.Response:
        try:
            code, payload, warnings = self._serve(request, raw, record)
            response = self._respond(code, payload)
            for warning in warnings:
                response.headers.add("Warning", f'299 - "unknown field \\"{warning}\\""')
        except ApiStatusError as exc:
            response = self._respond(exc.code, exc.status, exc.headers)
        return response

    async def _hold(self, seconds: float | None) -> None:
        """Wait ``seconds`` (None: forever), but never past ``stop()``."""
        if seconds == 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    @staticmethod
    def _respond(code: int, payload: Obj, headers: dict[str, str] | None = None) -> web.Response:
        response = web.Response(status=code, body=json.dumps(payload).encode(), headers=headers)
        response.content_type = "application/json"  # no charset parameter, like the apiserver
        return response

    def _take_fault(self, method: str, path: str, dry_run: bool) -> _Injected | None:
        for fault in self._faults:
            if (
                fault.method in ("*", method)
                and fault.path.search(path)
                and fault.dry_run in (None, dry_run)
            ):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _serve(
        self, request: web.Request, raw: bytes, record: RecordedRequest
    ) -> tuple[int, Obj, builtins.list[str]]:
        """Answer one authenticated request, in the order the real handlers check things:
        authn, route, authz, options, media type and body, then the object itself."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise _error(401, "Unauthorized", "Unauthorized")
        if request.path in ("/version", "/version/") and request.method == "GET":
            return 200, dict(SERVER_VERSION), []
        route = self._route(request.path)
        method, query = request.method, request.query
        verb = {
            "GET": "get" if route.name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(method)
        if verb is None:
            raise _method_not_allowed()
        if verb == "list" and query.get("watch") in ("1", "t", "T", "true", "True", "TRUE"):
            verb = "watch"
        self._authorize(verb, route)
        if verb == "watch":
            raise _error(405, "MethodNotAllowed", "FakeKube does not implement watch")
        options = {
            "POST": "CreateOptions",
            "PUT": "UpdateOptions",
            "PATCH": "PatchOptions",
            "DELETE": "DeleteOptions",
        }.get(method)
        dry_run = self._dry_run(query.getall("dryRun", []), options)
        validation = self._field_validation(query.get("fieldValidation", ""), options)
        res, name = route.res, route.name
        if route.subresource is not None:
            if route.subresource != "scale" or not res.scalable or name is None:
                raise _no_route()
            if method == "GET":
                return 200, self._scale_view(res, self._get_or_404(res, route.namespace, name)), []
            if method not in ("PATCH", "PUT"):
                raise _method_not_allowed()
            return self._write_scale(route, request, raw, dry_run, validation)
        if name is None:
            if method == "GET":
                return 200, self._list_response(res, route.namespace, query), []
            if method != "POST" or (res.namespaced and not route.namespace):
                raise _method_not_allowed()
            body = self._body(res, request, raw, validation)
            obj = self._create(res, route.namespace, body.obj, dry_run=dry_run)
            return 201, obj, body.unknown
        if method == "GET":
            return 200, copy.deepcopy(self._get_or_404(res, route.namespace, name)), []
        if method == "PUT":
            body = self._body(res, request, raw, validation)
            old = self._get_or_404(res, route.namespace, name)
            self._check_identity(body.obj, route)
            return 200, self._update(res, old, body.obj, dry_run=dry_run), body.unknown
        if method == "PATCH":
            media = self._patch_media(request)
            old = self._get_or_404(res, route.namespace, name)
            patched = self._apply_patch(media, raw, old)
            new, unknown = self._decode_patched(res, patched, raw, validation)
            self._check_identity(new, route)
            return 200, self._update(res, old, new, dry_run=dry_run), unknown
        delete_opts = self._delete_options(query, raw)
        if self._dry_run(delete_opts.get("dryRun", []), "DeleteOptions"):
            dry_run = record.dry_run = True
        return 200, self._delete(res, route.namespace, name, delete_opts, dry_run=dry_run), []

    @staticmethod
    def _route(path: str) -> _Route:
        groups = {"/api/v1/": "", "/apis/apps/v1/": "apps"}
        prefix = next((p for p in groups if path.startswith(p)), None)
        if prefix is None:
            raise _no_route()
        group, parts = groups[prefix], path[len(prefix) :].split("/")
        namespace = ""
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        res = _RESOURCES.get(parts[0])
        if (
            not 1 <= len(parts) <= 3
            or "" in parts
            or res is None
            or res.group != group
            or (namespace and not res.namespaced)
            or (res.namespaced and not namespace and len(parts) > 1)
        ):
            raise _no_route()
        return _Route(
            res,
            namespace,
            parts[1] if len(parts) > 1 else None,
            parts[2] if len(parts) > 2 else None,
        )

    def _authorize(self, verb: str, route: _Route) -> None:
        res = route.res
        resource = f"{res.plural}/{route.subresource}" if route.subresource else res.plural
        for d_verb, d_resource, d_namespace in self._denials:
            if (
                d_verb in ("*", verb)
                and d_resource in ("*", resource)
                and (d_namespace is None or d_namespace == route.namespace)
            ):
                target = f'{res.qualified} "{route.name}"' if route.name else res.qualified
                scope = (
                    f'in the namespace "{route.namespace}"'
                    if route.namespace
                    else "at the cluster scope"
                )
                raise _error(
                    403,
                    "Forbidden",
                    f'{target} is forbidden: User "{self.user}" cannot {verb} resource '
                    f'"{resource}" in API group "{res.group}" {scope}',
                    _details(res, route.name or ""),
                )

    @staticmethod
    def _dry_run(values: builtins.list[str], options: str | None) -> bool:
        """``dryRun`` must be exactly ``All``; anything else is a 422 on the *Options kind."""
        if options is None or not values:
            return False
        if any(v != "All" for v in values):
            go_list = "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"
            raise _options_invalid(
                options, [_FieldError("dryRun", "NotSupported", '"All"', _GoLiteral(go_list))]
            )
        return True

    @staticmethod
    def _field_validation(value: str, options: str | None) -> str:
        """Unknown-field policy; the server's default is Warn (drop and say so in a header)."""
        if options in (None, "DeleteOptions") or value in ("", "Ignore", "Strict", "Warn"):
            return value or "Warn"
        raise _options_invalid(
            options,
            [
                _FieldError(
                    "fieldValidation", "NotSupported", '"", "Ignore", "Strict", "Warn"', value
                )
            ],
        )

    def _body(
        self,
        res: _Resource,
        request: web.Request,
        raw: bytes,
        validation: str,
        model: str | None = None,
        kind: str | None = None,
        api_version: str | None = None,
    ) -> _DecodedBody:
        """Decode a PUT/POST body as the server would: 415, 400 for JSON/type errors, unknown
        fields dropped (Warn), ignored or refused (Strict)."""
        if request.content_type.lower() != "application/json":
            raise _error(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(_BODY_TYPES)}",
            )
        kind, api_version = kind or res.kind, api_version or res.api_version
        model = model or res.model
        prefix = f'{kind} in version "v1" cannot be handled as a {kind}: '
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _bad_request(prefix + f"invalid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _bad_request(
                prefix + f"json: cannot unmarshal {_json_kind(body)} into Go "
                f"value of type {_go_struct(model)}"
            )
        if body.get("apiVersion") not in (None, api_version):
            raise _bad_request(
                f"the API version in the data ({body['apiVersion']}) does not "
                f"match the expected API version ({api_version})"
            )
        if body.get("kind") not in (None, kind):
            raise _bad_request(
                f"the kind in the data ({body['kind']}) does not match the expected kind ({kind})"
            )
        unknown: builtins.list[str] = []
        try:
            obj = _decode(body, model, "", model, unknown)
        except _DecodeError as exc:
            raise _bad_request(prefix + str(exc)) from exc
        if unknown and validation == "Strict":
            raise _bad_request(
                "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
            )
        return _DecodedBody(obj, unknown if validation == "Warn" else [])

    @staticmethod
    def _patch_media(request: web.Request) -> str:
        media = request.content_type.lower()
        if media not in (_SMP, _MERGE_PATCH, _JSON_PATCH):
            raise _error(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(_PATCH_TYPES)}",
            )
        return media

    @staticmethod
    def _apply_patch(media: str, raw: bytes, current: Obj) -> Any:
        try:
            patch = json.loads(raw)
        except ValueError as exc:
            raise _bad_request(f"error decoding patch: {exc}") from exc
        if media == _JSON_PATCH:
            return _json_patch(current, patch)
        if not isinstance(patch, dict):
            raise _bad_request(
                f"json: cannot unmarshal {_json_kind(patch)} into Go value of "
                "type map[string]interface {}"
            )
        return _smp_apply(current, patch) if media == _SMP else _merge_patch(current, patch)

    @staticmethod
    def _decode_patched(
        res: _Resource, patched: Any, raw: bytes, validation: str, model: str | None = None
    ) -> tuple[Obj, builtins.list[str]]:
        """Decode a patched document; errors here are 422s with an empty kind, like the server's
        (which quotes the patch, not the object, as the invalid value)."""
        model = model or res.model
        unknown: builtins.list[str] = []
        try:
            if not isinstance(patched, dict):
                raise _DecodeError(
                    f"json: cannot unmarshal {_json_kind(patched)} into Go value "
                    f"of type {_go_struct(model)}"
                )
            obj = _decode(patched, model, "", model, unknown)
            if unknown and validation == "Strict":
                raise _DecodeError(
                    "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
                )
        except _DecodeError as exc:
            quoted = _GoLiteral(json.dumps(raw.decode(errors="replace")))
            raise _invalid("", "", [_FieldError("patch", "Invalid", str(exc), quoted)]) from exc
        return obj, unknown if validation == "Warn" else []

    @staticmethod
    def _check_identity(obj: Obj, route: _Route) -> None:
        meta = obj.get("metadata", {})
        if meta.get("name") != route.name:
            raise _bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match "
                f"the name on the URL ({route.name})"
            )
        if route.res.namespaced and meta.get("namespace") not in (None, "", route.namespace):
            raise _bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )

    @staticmethod
    def _delete_options(query: Mapping[str, str], raw: bytes) -> Obj:
        """DeleteOptions from the body (where the client puts V1DeleteOptions) and the query."""
        opts: Obj = {}
        if raw.strip():
            try:
                opts = _decode(json.loads(raw), "V1DeleteOptions", "", "V1DeleteOptions", [])
            except (ValueError, _DecodeError) as exc:
                raise _bad_request(
                    f'DeleteOptions in version "v1" cannot be handled as a DeleteOptions: {exc}'
                ) from exc
        for name in ("gracePeriodSeconds", "propagationPolicy", "orphanDependents"):
            if name in query:
                opts[name] = query[name]
        if "gracePeriodSeconds" in opts:
            try:
                opts["gracePeriodSeconds"] = int(opts["gracePeriodSeconds"])
            except ValueError as exc:
                raise _bad_request(
                    f"gracePeriodSeconds: invalid value {opts['gracePeriodSeconds']!r}"
                ) from exc
        if str(opts.get("orphanDependents", "")).lower() == "true":
            opts.setdefault("propagationPolicy", "Orphan")
        policy = opts.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise _options_invalid(
                "DeleteOptions",
                [
                    _FieldError(
                        "propagationPolicy",
                        "NotSupported",
                        '"Background", "Foreground", "Orphan"',
                        policy,
                    )
                ],
            )
        return opts

    # ------------------------------------------------------------------ verbs

    def _get_or_404(self, res: _Resource, namespace: str, name: str) -> Obj:
        obj = self._store[res.plural].get((namespace, name))
        if obj is None:
            raise _not_found(res, name)
        return obj

    def _list_response(self, res: _Resource, namespace: str, query: Mapping[str, str]) -> Obj:
        labels = _parse_label_selector(query.get("labelSelector", ""))
        fields = _parse_field_selector(res, query.get("fieldSelector", ""))
        items = [
            copy.deepcopy(o)
            for (ns, _), o in sorted(self._store[res.plural].items())
            if (not namespace or ns == namespace)
            and all(r.matches(_labels(o)) for r in labels)
            and all((_field_value(o, f) == v) == eq for f, eq, v in fields)
        ]
        for item in items:  # list items carry no kind/apiVersion on the wire
            item.pop("kind", None)
            item.pop("apiVersion", None)
        metadata: Obj = {"resourceVersion": str(self._rv)}
        offset = 0
        if query.get("continue"):
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(query["continue"]))["offset"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _bad_request(f"continue key is not valid: {exc}") from exc
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as exc:
            raise _bad_request(f"limit: invalid value {query['limit']!r}") from exc
        page = items[offset : offset + limit] if limit > 0 else items[offset:]
        if limit > 0 and offset + limit < len(items):
            token = json.dumps({"offset": offset + limit}).encode()
            metadata["continue"] = base64.urlsafe_b64encode(token).decode()
            metadata["remainingItemCount"] = len(items) - offset - limit
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": metadata,
            "items": page,
        }

    def _create(
        self,
        res: _Resource,
        namespace: str,
        body: Obj,
        *,
        dry_run: bool,
        run_controllers: bool = True,
    ) -> Obj:
        """Admission for a new object; controllers creating children pass
        ``run_controllers=False`` because they are already inside a reconcile."""
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = _meta(obj)
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
            if ("", namespace) not in self._store["namespaces"]:
                raise _not_found(_RESOURCES["namespaces"], namespace)
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise _bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + self._suffix()
        for server_owned in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            meta.pop(server_owned, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if res.spec_generation:
            meta["generation"] = 1
        if res.status_subresource:
            obj.pop("status", None)
        self._default(res, obj)
        errs = self._validate(res, obj, None)
        if errs:
            raise _invalid(res.group_kind, meta.get("name", ""), errs, res.group)
        if _key(obj) in self._store[res.plural]:
            raise _error(
                409,
                "AlreadyExists",
                f'{res.qualified} "{meta["name"]}" already exists',
                _details(res, meta["name"]),
            )
        if dry_run:
            return obj
        self._save(res, obj)
        created = copy.deepcopy(obj)
        if run_controllers:
            self._after_write(res, obj, None)
        return created

    def _update(self, res: _Resource, old: Obj, new: Obj, *, dry_run: bool) -> Obj:
        """The shared tail of PUT, PATCH, scale and ``set_image``: preconditions, server-owned
        fields, defaulting, validation, generation, no-op detection, persistence, controllers."""
        obj = copy.deepcopy(new)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta, old_meta = _meta(obj), old["metadata"]
        name = old_meta["name"]
        if meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
            raise _conflict(res, name, _STALE)
        if meta.get("uid") not in (None, "", old_meta["uid"]):
            raise _conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, "
                f"UID in object meta: {old_meta['uid']}",
            )
        for owned in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if owned in old_meta:
                meta[owned] = old_meta[owned]
            else:
                meta.pop(owned, None)
        if res.status_subresource:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        self._default(res, obj)
        errs = self._validate(res, obj, old)
        if errs:
            raise _invalid(res.group_kind, name, errs, res.group)
        if res.spec_generation and obj.get("spec") != old.get("spec"):
            meta["generation"] = old_meta.get("generation", 0) + 1
        if obj == old or dry_run:
            return obj
        self._save(res, obj)
        updated = copy.deepcopy(obj)
        self._after_write(res, obj, old)
        return updated

    def _delete(
        self, res: _Resource, namespace: str, name: str, opts: Obj, *, dry_run: bool
    ) -> Obj:
        obj = self._get_or_404(res, namespace, name)
        meta = obj["metadata"]
        pre = opts.get("preconditions") or {}
        if pre.get("uid") not in (None, meta["uid"]):
            raise _conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") not in (None, meta["resourceVersion"]):
            raise _conflict(
                res,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
            )
        if res.returns_deleted_object:
            result = copy.deepcopy(obj)
            grace = opts.get(
                "gracePeriodSeconds", obj.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            )
            if res.plural == "namespaces":
                result["status"] = {"phase": "Terminating"}
                result["metadata"]["deletionTimestamp"] = _now()
            elif grace > 0:
                stamp = datetime.now(UTC) + timedelta(seconds=grace)
                result["metadata"]["deletionTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
                result["metadata"]["deletionGracePeriodSeconds"] = grace
        else:
            result = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {**_details(res, name), "uid": meta["uid"]},
            }
        if dry_run:
            return result
        self._remove(res, obj, orphan=opts.get("propagationPolicy") == "Orphan")
        self._after_delete(res, obj)
        return result

    # ---------------------------------------------------------------- scale subresource

    def _scale_view(self, res: _Resource, obj: Obj) -> Obj:
        meta = obj["metadata"]
        selector = ",".join(
            r.render() for r in _selector_requirements(obj["spec"].get("selector") or {})
        )
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": obj["spec"].get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": selector},
        }

    def _write_scale(
        self, route: _Route, request: web.Request, raw: bytes, dry_run: bool, validation: str
    ) -> tuple[int, Obj, builtins.list[str]]:
        """PATCH/PUT on /scale: whatever the body says, only ``spec.replicas`` reaches the
        parent (the Scale is a view, not a merge target)."""
        res = route.res
        assert route.name is not None
        if request.method == "PUT":
            body = self._body(
                res,
                request,
                raw,
                validation,
                model="V1Scale",
                kind="Scale",
                api_version="autoscaling/v1",
            )
            old = self._get_or_404(res, route.namespace, route.name)
            scale, unknown = body.obj, body.unknown
        else:
            media = self._patch_media(request)
            old = self._get_or_404(res, route.namespace, route.name)
            patched = self._apply_patch(media, raw, self._scale_view(res, old))
            scale, unknown = self._decode_patched(res, patched, raw, validation, model="V1Scale")
        self._check_identity(scale, route)
        replicas = scale.get("spec", {}).get("replicas", 0)
        if replicas < 0:
            raise _invalid(
                "Scale.autoscaling",
                route.name,
                [
                    _FieldError(
                        "spec.replicas", "Invalid", "must be greater than or equal to 0", replicas
                    )
                ],
                "autoscaling",
            )
        parent = copy.deepcopy(old)
        scale_meta = scale.get("metadata", {})
        for precondition in ("resourceVersion", "uid"):
            if scale_meta.get(precondition):
                parent["metadata"][precondition] = scale_meta[precondition]
        parent["spec"]["replicas"] = replicas
        return 200, self._scale_view(res, self._update(res, old, parent, dry_run=dry_run)), unknown

    # ---------------------------------------------------------------- defaulting & validation

    @staticmethod
    def _default(res: _Resource, obj: Obj) -> None:
        spec: Obj = {} if res.plural == "controllerrevisions" else obj.setdefault("spec", {})
        if res.plural in ("deployments", "statefulsets", "replicasets"):
            spec.setdefault("replicas", 1)
        if res.plural in ("deployments", "statefulsets", "daemonsets"):
            spec.setdefault("revisionHistoryLimit", 10)
        if res.plural == "deployments":
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy["type"] = "RollingUpdate"
                strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
        if res.plural == "statefulsets":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault(
                "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
            )
            spec.setdefault(
                "persistentVolumeClaimRetentionPolicy",
                {"whenDeleted": "Retain", "whenScaled": "Retain"},
            )
        if res.plural == "daemonsets":
            spec.setdefault(
                "updateStrategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            )
        if res.plural in _WORKLOADS and isinstance(spec.get("template", {}).get("spec"), dict):
            _default_pod_spec(spec["template"]["spec"])
        if res.plural == "pods":
            _default_pod_spec(spec)
            obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
        if res.plural == "namespaces":
            spec.setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {"phase": "Active"})

    def _validate(self, res: _Resource, obj: Obj, old: Obj | None) -> builtins.list[_FieldError]:
        """The checks of the real validation code that opsgate can trip over."""
        errs: builtins.list[_FieldError] = []
        name = obj["metadata"].get("name")
        pattern = _DNS1123_LABEL if res.plural == "namespaces" else _DNS1123_SUBDOMAIN
        if not name:
            errs.append(
                _FieldError("metadata.name", "Required", "name or generateName is required")
            )
        elif not re.fullmatch(pattern, name) or len(name) > 253:
            errs.append(
                _FieldError(
                    "metadata.name",
                    "Invalid",
                    "a lowercase RFC 1123 subdomain must consist of lower case "
                    "alphanumeric characters, '-' or '.', and must start and end "
                    "with an alphanumeric character",
                    name,
                )
            )
        spec = obj.get("spec", {})
        if res.plural in _WORKLOADS:
            for field in (
                "replicas",
                "revisionHistoryLimit",
                "minReadySeconds",
                "progressDeadlineSeconds",
            ):
                if spec.get(field, 0) < 0:
                    errs.append(
                        _FieldError(
                            f"spec.{field}",
                            "Invalid",
                            "must be greater than or equal to 0",
                            spec[field],
                        )
                    )
            errs += self._validate_selector(res, spec, old)
            strategy = spec.get("strategy", {})
            if strategy.get("type") == "Recreate" and "rollingUpdate" in strategy:
                errs.append(
                    _FieldError(
                        "spec.strategy.rollingUpdate",
                        "Forbidden",
                        "may not be specified when strategy `type` is 'Recreate'",
                    )
                )
            errs += self._validate_pod_spec(
                spec.get("template", {}).get("spec"), "spec.template.spec"
            )
        if res.plural == "statefulsets" and old is not None:

            def frozen(sts_spec: Obj) -> Obj:
                return {k: v for k, v in sts_spec.items() if k not in _STS_MUTABLE_SPEC}

            if frozen(spec) != frozen(old["spec"]):
                errs.append(
                    _FieldError(
                        "spec",
                        "Forbidden",
                        "updates to statefulset spec for "
                        "fields other than "
                        + ", ".join(f"'{f}'" for f in _STS_MUTABLE_SPEC[:-1])
                        + f" and '{_STS_MUTABLE_SPEC[-1]}' are forbidden",
                    )
                )
        if res.plural == "pods":
            errs += self._validate_pod_spec(spec, "spec")
            if old is not None and self._pod_spec_frozen(spec) != self._pod_spec_frozen(
                old["spec"]
            ):
                errs.append(
                    _FieldError(
                        "spec",
                        "Forbidden",
                        "pod updates may not change fields other than "
                        "`spec.containers[*].image`,`spec.initContainers[*].image`"
                        ",`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                        "additions to existing tolerations)",
                    )
                )
        if res.plural == "controllerrevisions":
            if obj.get("revision", 0) < 0:
                errs.append(
                    _FieldError(
                        "revision", "Invalid", "must be greater than or equal to 0", obj["revision"]
                    )
                )
            if old is not None and obj.get("data") != old.get("data"):
                errs.append(_FieldError("data", "Invalid", "field is immutable", obj.get("data")))
        return errs

    @staticmethod
    def _validate_selector(
        res: _Resource, spec: Obj, old: Obj | None
    ) -> builtins.list[_FieldError]:
        selector = spec.get("selector")
        if not selector:
            return [_FieldError("spec.selector", "Required")]
        reqs = _selector_requirements(selector)
        if not reqs:
            return [
                _FieldError(
                    "spec.selector",
                    "Invalid",
                    f"empty selector is invalid for {res.kind.lower()}",
                    selector,
                )
            ]
        errs = []
        labels = (spec.get("template", {}).get("metadata") or {}).get("labels") or {}
        if not all(r.matches(labels) for r in reqs):
            errs.append(
                _FieldError(
                    "spec.template.metadata.labels",
                    "Invalid",
                    "`selector` does not match template `labels`",
                    labels,
                )
            )
        if old is not None and old["spec"].get("selector") != selector:
            errs.append(_FieldError("spec.selector", "Invalid", "field is immutable", selector))
        return errs

    @staticmethod
    def _validate_pod_spec(spec: Any, path: str) -> builtins.list[_FieldError]:
        if not isinstance(spec, dict):
            return [_FieldError(path, "Required")]
        containers = spec.get("containers") or []
        if not containers:
            return [_FieldError(f"{path}.containers", "Required")]
        errs, seen = [], set()
        for i, container in enumerate(containers):
            name = container.get("name")
            if not name:
                errs.append(_FieldError(f"{path}.containers[{i}].name", "Required"))
            elif not re.fullmatch(_DNS1123_LABEL, name) or len(name) > 63:
                errs.append(
                    _FieldError(
                        f"{path}.containers[{i}].name",
                        "Invalid",
                        "a lowercase RFC 1123 label must consist of lower case "
                        "alphanumeric characters or '-'",
                        name,
                    )
                )
            elif name in seen:
                errs.append(_FieldError(f"{path}.containers[{i}].name", "Duplicate", value=name))
            seen.add(name)
            if not container.get("image"):
                errs.append(_FieldError(f"{path}.containers[{i}].image", "Required"))
        return errs

    @staticmethod
    def _pod_spec_frozen(spec: Obj) -> Obj:
        """The part of a pod spec that may never change after creation."""
        frozen = copy.deepcopy(spec)
        for field in ("activeDeadlineSeconds", "tolerations"):
            frozen.pop(field, None)
        for container in frozen.get("containers", []) + frozen.get("initContainers", []):
            container.pop("image", None)
        return frozen

    # ---------------------------------------------------------------- store primitives

    def _resource(self, kind: str) -> _Resource:
        try:
            return _RESOURCES[kind]
        except KeyError:
            raise ValueError(f"unknown kind {kind!r}; use one of {sorted(_RESOURCES)}") from None

    def _require(self, kind: str, namespace: str | None, name: str) -> Obj:
        res = self._resource(kind)
        obj = self._store[res.plural].get((namespace or "" if res.namespaced else "", name))
        if obj is None:
            raise KeyError(f"{kind} {namespace}/{name} does not exist")
        return obj

    def _save(self, res: _Resource, obj: Obj) -> None:
        """Persist with a fresh resourceVersion from the global counter (like etcd's revision)."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._store[res.plural][_key(obj)] = obj

    def _save_changed(self, res: _Resource, obj: Obj, before: Obj) -> None:
        if obj != before:
            self._save(res, obj)

    def _suffix(self) -> str:
        return "".join(self._random.choice(_SAFE_ALPHABET) for _ in range(5))

    def _ensure_namespace(self, namespace: str) -> None:
        if ("", namespace) not in self._store["namespaces"]:
            self._create(
                _RESOURCES["namespaces"], "", {"metadata": {"name": namespace}}, dry_run=False
            )

    def _add(
        self, kind: str, namespace: str, name: str, spec: Obj, labels: dict[str, str] | None
    ) -> Obj:
        self._ensure_namespace(namespace)
        res = _RESOURCES[kind]
        body = {"metadata": {"name": name, "labels": dict(labels or {"app": name})}, "spec": spec}
        self._create(res, namespace, body, dry_run=False)
        return copy.deepcopy(self._require(kind, namespace, name))

    @staticmethod
    def _workload_spec(name: str, image: str, labels: dict[str, str] | None) -> Obj:
        selected = dict(labels or {"app": name})
        return {
            "selector": {"matchLabels": selected},
            "template": {
                "metadata": {"labels": dict(selected)},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        }

    def _owned(self, plural: str, owner: Obj) -> builtins.list[Obj]:
        """Objects whose controller ownerReference points at ``owner`` (by uid, as the GC does)."""
        uid = owner["metadata"]["uid"]
        namespace = owner["metadata"].get("namespace", "")
        return [
            o
            for (ns, _), o in sorted(self._store[plural].items())
            if ns == namespace
            and any(
                r.get("uid") == uid and r.get("controller")
                for r in o["metadata"].get("ownerReferences", [])
            )
        ]

    def _controller_of(self, obj: Obj) -> tuple[str, Obj] | None:
        for ref in obj["metadata"].get("ownerReferences", []):
            res = _BY_KIND.get(ref.get("kind", ""))
            if ref.get("controller") and res is not None:
                owner = self._store[res.plural].get(
                    (obj["metadata"].get("namespace", ""), ref["name"])
                )
                if owner is not None and owner["metadata"]["uid"] == ref["uid"]:
                    return res.plural, owner
        return None

    def _top_controller(self, plural: str, obj: Obj) -> tuple[str, Obj]:
        current = (plural, obj)
        while (parent := self._controller_of(current[1])) is not None:
            current = parent
        return current

    def _mode_of(self, plural: str, obj: Obj) -> RolloutMode:
        current: tuple[str, Obj] | None = (plural, obj)
        while current is not None:
            kind, item = current
            namespace, name = _key(item)
            if (kind, namespace, name) in self._modes:
                return self._modes[(kind, namespace, name)]
            current = self._controller_of(item)
        return self._default_mode

    def _remove(self, res: _Resource, obj: Obj, *, orphan: bool = False) -> None:
        """Delete an object and, like the garbage collector, its dependents (or orphan them)."""
        self._store[res.plural].pop(_key(obj), None)
        self._rv += 1
        uid = obj["metadata"]["uid"]
        if res.plural == "namespaces":
            for plural in (*_WORKLOADS, "controllerrevisions", "pods"):
                for key in [k for k in self._store[plural] if k[0] == obj["metadata"]["name"]]:
                    self._store[plural].pop(key)
            return
        for plural, objects in self._store.items():
            for dependent in [
                o
                for o in objects.values()
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))
            ]:
                if orphan:
                    dependent["metadata"]["ownerReferences"] = [
                        r for r in dependent["metadata"]["ownerReferences"] if r.get("uid") != uid
                    ]
                    self._save(_RESOURCES[plural], dependent)
                else:
                    self._remove(_RESOURCES[plural], dependent)

    # ---------------------------------------------------------------- controllers

    def _after_write(self, res: _Resource, obj: Obj, old: Obj | None) -> None:
        """What the controllers do after an object is created or changed."""
        if res.plural in _WORKLOADS:
            self._reconcile(self._top_controller(res.plural, obj))
        elif res.plural == "pods" and old is None:
            self._start_pod(obj)
        elif res.plural == "nodes" and old is None:
            self._start_node(obj)
            self._reconcile_all_daemonsets()

    def _after_delete(self, res: _Resource, obj: Obj) -> None:
        if res.plural == "nodes":
            self._reconcile_all_daemonsets()
        owner = self._controller_of(obj)
        if owner is not None:
            self._reconcile(self._top_controller(*owner))

    def _reconcile_all_daemonsets(self) -> None:
        for ds in list(self._store["daemonsets"].values()):
            self._reconcile(("daemonsets", ds))

    def _reconcile(self, target: tuple[str, Obj], *, force: bool = False) -> None:
        plural, obj = target
        mode = self._mode_of(plural, obj)
        converge = force or mode == "immediate"
        report = force or mode != "manual"
        if plural == "deployments":
            self._reconcile_deployment(obj, converge, force, report)
        elif plural == "replicasets":
            self._sync_replicaset(obj, ready_new=converge, heal=force, report=report)
        else:
            self._reconcile_revisioned(plural, obj, converge, force, report)

    def _reconcile_deployment(
        self, deployment: Obj, converge: bool, heal: bool, report: bool
    ) -> None:
        rs_res = _RESOURCES["replicasets"]
        new_rs = self._deployment_revision(deployment)
        for rs in self._owned("replicasets", deployment):
            want = (
                deployment["spec"]["replicas"]
                if rs is new_rs
                else (0 if converge else rs["spec"]["replicas"])
            )
            if rs["spec"]["replicas"] != want:
                rs["spec"]["replicas"] = want
                rs["metadata"]["generation"] += 1
                self._save(rs_res, rs)
            self._sync_replicaset(rs, ready_new=converge, heal=heal and rs is new_rs, report=report)
        if report:
            self._deployment_status(deployment, new_rs)

    def _deployment_revision(self, deployment: Obj) -> Obj:
        """Find or create the ReplicaSet for the current template and make it the newest
        revision: exactly the bookkeeping ``kubectl rollout undo`` depends on."""
        rs_res = _RESOURCES["replicasets"]
        template = deployment["spec"]["template"]
        owned = self._owned("replicasets", deployment)
        newest = max((_revision(rs) for rs in owned), default=0)
        wanted = _without_hash_label(template)
        match = next(
            (rs for rs in owned if _without_hash_label(rs["spec"]["template"]) == wanted), None
        )
        if match is None:
            template_hash = _template_hash(template)
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})[_HASH_LABEL] = (
                template_hash
            )
            selector = copy.deepcopy(deployment["spec"]["selector"])
            selector.setdefault("matchLabels", {})[_HASH_LABEL] = template_hash
            match = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{deployment['metadata']['name']}-{template_hash}",
                    "namespace": deployment["metadata"]["namespace"],
                    "labels": dict(rs_template["metadata"]["labels"]),
                    "annotations": {_REVISION_ANNOTATION: str(newest + 1)},
                    "ownerReferences": [_controller_ref(_RESOURCES["deployments"], deployment)],
                },
                "spec": {"replicas": 0, "selector": selector, "template": rs_template},
            }
            created = self._create(
                rs_res,
                deployment["metadata"]["namespace"],
                match,
                dry_run=False,
                run_controllers=False,
            )
            match = self._store["replicasets"][_key(created)]
            self._deadline_exceeded.discard(_key(deployment))  # a new rollout starts the clock
        elif _revision(match) < newest:
            annotations = match["metadata"].setdefault("annotations", {})
            history = [h for h in annotations.get(_REVISION_HISTORY_ANNOTATION, "").split(",") if h]
            annotations[_REVISION_HISTORY_ANNOTATION] = ",".join([*history, str(_revision(match))])
            annotations[_REVISION_ANNOTATION] = str(newest + 1)
            self._save(rs_res, match)
            self._deadline_exceeded.discard(_key(deployment))
        before = copy.deepcopy(deployment)
        deployment["metadata"].setdefault("annotations", {})[_REVISION_ANNOTATION] = str(
            _revision(match)
        )
        self._save_changed(_RESOURCES["deployments"], deployment, before)
        return match

    def _sync_replicaset(self, rs: Obj, *, ready_new: bool, heal: bool, report: bool) -> None:
        pods_res = _RESOURCES["pods"]
        pods = self._owned("pods", rs)
        want = rs["spec"]["replicas"]
        template = rs["spec"]["template"]
        for _ in range(want - len(pods)):
            self._make_pod(
                ("replicasets", rs),
                f"{rs['metadata']['name']}-{self._suffix()}",
                template,
                {},
                ready=ready_new,
            )
        if len(pods) > want:  # like the RS controller: not-ready pods go first, then newest
            doomed = sorted(
                pods, key=lambda p: (_pod_ready(p), -int(p["metadata"]["resourceVersion"]))
            )
            for pod in doomed[: len(pods) - want]:
                self._remove(pods_res, pod)
        pods = self._owned("pods", rs)
        if heal:
            for pod in pods:
                if not _pod_ready(pod):
                    self._set_pod_status(pod, True)
                    self._save(pods_res, pod)
        if report:
            ready = sum(_pod_ready(p) for p in pods)
            before = copy.deepcopy(rs)
            rs["status"] = {
                "replicas": len(pods),
                **_nonzero(
                    fullyLabeledReplicas=len(pods), readyReplicas=ready, availableReplicas=ready
                ),
                "observedGeneration": rs["metadata"]["generation"],
            }
            self._save_changed(_RESOURCES["replicasets"], rs, before)

    def _deployment_status(self, deployment: Obj, new_rs: Obj) -> None:
        owned = self._owned("replicasets", deployment)
        pods = [p for rs in owned for p in self._owned("pods", rs)]
        new_pods = self._owned("pods", new_rs)
        desired = deployment["spec"]["replicas"]
        ready = sum(_pod_ready(p) for p in pods)
        wanted = sum(rs["spec"]["replicas"] for rs in owned)  # the controller's totalReplicas
        done = len(new_pods) == desired == len(pods) and all(_pod_ready(p) for p in new_pods)
        rs_name = new_rs["metadata"]["name"]
        if _key(deployment) in self._deadline_exceeded:
            progressing = _condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
                update_time=True,
            )
        elif done:
            progressing = _condition(
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
                update_time=True,
            )
        else:
            progressing = _condition(
                "Progressing",
                True,
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
                update_time=True,
            )
        available = (
            _condition(
                "Available",
                True,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                update_time=True,
            )
            if ready >= desired - _max_unavailable(deployment)
            else _condition(
                "Available",
                False,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                update_time=True,
            )
        )
        before = copy.deepcopy(deployment)
        old_conditions = before.get("status", {}).get("conditions", [])
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            **_nonzero(
                replicas=len(pods),
                updatedReplicas=len(new_pods),
                readyReplicas=ready,
                availableReplicas=ready,
                unavailableReplicas=max(wanted - ready, 0),
            ),
            "conditions": _keep_transition_times([available, progressing], old_conditions),
        }
        self._save_changed(_RESOURCES["deployments"], deployment, before)

    def _controller_revision(self, plural: str, workload: Obj) -> Obj:
        """Find or create the ControllerRevision for the current template, newest revision wins.

        ``data`` is the strategic merge patch ``kubectl rollout undo`` sends back verbatim.
        """
        template = workload["spec"]["template"]
        data = {"spec": {"template": {**copy.deepcopy(template), "$patch": "replace"}}}
        owned = self._owned("controllerrevisions", workload)
        newest = max((cr["revision"] for cr in owned), default=0)
        match = next((cr for cr in owned if cr["data"] == data), None)
        cr_res = _RESOURCES["controllerrevisions"]
        if match is None:
            template_hash = _template_hash(template)
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            labels[_CR_HASH_LABEL] = template_hash
            body = {
                "metadata": {
                    "name": f"{workload['metadata']['name']}-{template_hash}",
                    "labels": labels,
                    "ownerReferences": [_controller_ref(_RESOURCES[plural], workload)],
                },
                "data": data,
                "revision": newest + 1,
            }
            created = self._create(
                cr_res,
                workload["metadata"]["namespace"],
                body,
                dry_run=False,
                run_controllers=False,
            )
            match = self._store["controllerrevisions"][_key(created)]
        elif match["revision"] < newest:
            match["revision"] = newest + 1
            self._save(cr_res, match)
        return match

    def _reconcile_revisioned(
        self, plural: str, workload: Obj, converge: bool, heal: bool, report: bool
    ) -> None:
        """StatefulSet and DaemonSet: ControllerRevisions, pods per ordinal / per node, status."""
        pods_res = _RESOURCES["pods"]
        revision = self._controller_revision(plural, workload)
        name = workload["metadata"]["name"]
        template = workload["spec"]["template"]
        if plural == "statefulsets":
            revision_label = revision["metadata"]["name"]
            slots = [f"{name}-{i}" for i in range(workload["spec"]["replicas"])]
        else:
            revision_label = revision["metadata"]["labels"][_CR_HASH_LABEL]
            slots = sorted(node["metadata"]["name"] for node in self._store["nodes"].values())

        def slot_of(pod: Obj) -> str:
            return str(
                pod["metadata"]["name"] if plural == "statefulsets" else pod["spec"].get("nodeName")
            )

        def create(slot: str, ready: bool) -> None:
            extra = {_POD_REVISION_LABEL: revision_label}
            if plural == "statefulsets":
                extra["statefulset.kubernetes.io/pod-name"] = slot
                extra["apps.kubernetes.io/pod-index"] = slot.rsplit("-", 1)[1]
                self._make_pod((plural, workload), slot, template, extra, ready=ready)
            else:
                self._make_pod(
                    (plural, workload),
                    f"{name}-{self._suffix()}",
                    template,
                    extra,
                    ready=ready,
                    node=slot,
                )

        pods = {slot_of(p): p for p in self._owned("pods", workload)}
        for slot, pod in pods.items():
            outdated = pod["metadata"]["labels"].get(_POD_REVISION_LABEL) != revision_label
            if slot not in slots or (converge and outdated):
                self._remove(pods_res, pod)
        present = {slot_of(p) for p in self._owned("pods", workload)}
        for slot in slots:
            if slot not in present:
                create(slot, converge)
        pods = {slot_of(p): p for p in self._owned("pods", workload)}
        if heal:
            for pod in pods.values():
                if not _pod_ready(pod):
                    self._set_pod_status(pod, True)
                    self._save(pods_res, pod)
        if report:
            self._revisioned_status(
                plural, workload, list(pods.values()), revision_label, revision["metadata"]["name"]
            )

    def _revisioned_status(
        self,
        plural: str,
        workload: Obj,
        pods: builtins.list[Obj],
        revision_label: str,
        revision_name: str,
    ) -> None:
        ready = sum(_pod_ready(p) for p in pods)
        updated = [
            p for p in pods if p["metadata"]["labels"].get(_POD_REVISION_LABEL) == revision_label
        ]
        before = copy.deepcopy(workload)
        generation = workload["metadata"]["generation"]
        if plural == "statefulsets":
            old_status = workload.get("status", {})
            desired = workload["spec"]["replicas"]
            done = len(updated) == desired == len(pods) == ready
            current = revision_name if done else old_status.get("currentRevision", revision_name)
            current_count = sum(
                p["metadata"]["labels"].get(_POD_REVISION_LABEL) == current for p in pods
            )
            workload["status"] = {
                "observedGeneration": generation,
                "replicas": len(pods),
                **_nonzero(
                    readyReplicas=ready,
                    currentReplicas=current_count,
                    updatedReplicas=len(updated),
                    availableReplicas=ready,
                ),
                "currentRevision": current,
                "updateRevision": revision_name,
                "collisionCount": 0,
            }
        else:
            desired = len(self._store["nodes"])
            workload["status"] = {
                "currentNumberScheduled": len(pods),
                "numberMisscheduled": 0,
                "desiredNumberScheduled": desired,
                "numberReady": ready,
                "observedGeneration": generation,
                **_nonzero(
                    updatedNumberScheduled=len(updated),
                    numberAvailable=ready,
                    numberUnavailable=max(desired - ready, 0),
                ),
            }
        self._save_changed(_RESOURCES[plural], workload, before)

    def _make_pod(
        self,
        owner: tuple[str, Obj],
        name: str,
        template: Obj,
        extra_labels: dict[str, str],
        *,
        ready: bool,
        node: str | None = None,
    ) -> None:
        plural, owner_obj = owner
        template_meta = template.get("metadata") or {}
        metadata: Obj = {
            "name": name,
            "namespace": owner_obj["metadata"]["namespace"],
            "labels": {**(template_meta.get("labels") or {}), **extra_labels},
            "ownerReferences": [_controller_ref(_RESOURCES[plural], owner_obj)],
            "uid": str(uuid.uuid4()),
            "creationTimestamp": _now(),
        }
        if plural != "statefulsets":
            metadata["generateName"] = f"{owner_obj['metadata']['name']}-"
        if template_meta.get("annotations"):
            metadata["annotations"] = dict(template_meta["annotations"])
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": copy.deepcopy(template["spec"]),
        }
        chosen = node or self._pick_node()
        if chosen:
            pod["spec"]["nodeName"] = chosen
        self._set_pod_status(pod, ready)
        self._save(_RESOURCES["pods"], pod)

    def _start_pod(self, pod: Obj) -> None:
        """Scheduler + kubelet for a pod created through the API."""
        if not pod["spec"].get("nodeName") and (node := self._pick_node()):
            pod["spec"]["nodeName"] = node
        self._set_pod_status(pod, self._mode_of("pods", pod) == "immediate")
        self._save(_RESOURCES["pods"], pod)

    def _start_node(self, node: Obj) -> None:
        """The kubelet registering: a Ready node with an address and some capacity."""
        now = _now()
        resources = {"cpu": "4", "memory": "16Gi", "pods": "110"}
        node["status"] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.0.{len(self._store['nodes'])}"},
                {"type": "Hostname", "address": node["metadata"]["name"]},
            ],
            "capacity": dict(resources),
            "allocatable": dict(resources),
        }
        self._save(_RESOURCES["nodes"], node)

    def _pick_node(self) -> str | None:
        schedulable: builtins.list[str] = sorted(
            n["metadata"]["name"]
            for n in self._store["nodes"].values()
            if not n.get("spec", {}).get("unschedulable")
        )
        if not schedulable:
            return None
        load = {n: 0 for n in schedulable}
        for pod in self._store["pods"].values():
            if pod["spec"].get("nodeName") in load:
                load[pod["spec"]["nodeName"]] += 1
        return min(schedulable, key=lambda n: load[n])

    def _set_pod_status(self, pod: Obj, ready: bool) -> None:
        """A running pod whose containers are (not) passing readiness."""
        old = pod.get("status", {})
        if "podIP" in old:
            ip = old["podIP"]
        else:
            self._pod_ips += 1
            ip = f"10.244.{self._pod_ips // 250}.{self._pod_ips % 250 + 2}"
        now = _now()
        names = [c["name"] for c in pod["spec"].get("containers", [])]
        unready = "" if ready else f"containers with unready status: [{' '.join(names)}]"
        reason = "" if ready else "ContainersNotReady"
        pod["status"] = {
            "phase": "Running",
            "conditions": _keep_transition_times(
                [
                    _condition("PodReadyToStartContainers", True),
                    _condition("Initialized", True),
                    _condition("Ready", ready, reason, unready),
                    _condition("ContainersReady", ready, reason, unready),
                    _condition("PodScheduled", True),
                ],
                old.get("conditions", []),
            ),
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": old.get("startTime", now),
            "qosClass": "BestEffort",
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "containerID": f"containerd://{uuid.uuid4().hex}",
                    "ready": ready,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": old.get("startTime", now)}},
                }
                for c in pod["spec"].get("containers", [])
            ],
        }
        node = self._store["nodes"].get(("", pod["spec"].get("nodeName", "")))
        if node is not None:
            pod["status"]["hostIP"] = node["status"]["addresses"][0]["address"]
