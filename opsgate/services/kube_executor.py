"""Runs a typed operation against Kubernetes the way kubectl does: dry run first, then real.

``context`` is kept in the database between attempts so that a retry repeats exactly the
same change (the same restartedAt stamp, the same target template) instead of a new one, and
so that ``prove`` can tell later whether that change is in place. An answer lost after the API
server applied a write must end as a success, not as a second, different change.

What ``context`` holds, all JSON: ``restarted_at`` (restart), ``undo_to_revision`` and
``undo_target`` (undo: the revision's name and its template's digest, which survive the
renumbering an undo causes), ``scale_from`` (scale, read once), ``pod_uid`` and ``owner``
(delete pod), ``unschedulable`` (cordon, uncordon), and ``apply_sent`` once a real call may
have gone out.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from opsgate.services.kube_client import KubeClient
from opsgate.services.operations import Operation, OperationKind

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
DRY_RUN = "All"
APPLY_SENT = "apply_sent"
CONFIRMED = "(confirmed by reading the object)"
# Pods in these phases hold nothing on their node.
_ENDED: tuple[str | None, ...] = ("Succeeded", "Failed")

BeforeApply = Callable[[], Awaitable[None]]

log = structlog.get_logger(__name__)


class Executor(Protocol):
    async def execute(
        self, op: Operation, context: dict[str, Any], *, before_apply: BeforeApply | None = None
    ) -> str:
        """Apply ``op``; return a one-line account of what changed; raise on failure.

        ``before_apply`` is awaited once the dry run passed, just before the real call, with
        ``context`` already holding what ``prove`` needs; if it raises, nothing is sent and its
        exception propagates unchanged. It is not awaited when there is nothing to send.
        """
        ...

    async def prove(self, op: Operation, context: dict[str, Any]) -> str | None:
        """The account of ``op`` when its change is observably in place, else None."""
        ...

    async def survey(self, op: Operation, *, dry_run: bool) -> dict[str, Any]:
        """The facts of ``op``'s plan as the target shows them now (operation_specs)."""
        ...


class StageFailed(Exception):
    """Says whether the dry run or the real call failed, so the audit log can tell them apart."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {cause}")
        self.stage = stage
        self.cause = cause


class UndoImpossible(Exception):
    """There is no earlier revision to return to."""


@dataclass(frozen=True)
class _Revision:
    """One revision an undo can return to: a deployment's ReplicaSet or a ControllerRevision."""

    number: int
    name: str
    template: dict[str, Any]
    patch: Any  # the body that puts this template back, as kubectl sends it


class KubeExecutor:
    # Set by _connect, which every public method awaits first: the API modules load with the
    # client (kube_client).
    _client: ApiClient
    _apps: AppsV1Api
    _core: CoreV1Api

    def __init__(self, kube: KubeClient, request_timeout: float) -> None:
        self._kube = kube
        self._timeout = request_timeout
        self._connected = False

    async def _connect(self) -> None:
        if self._connected:
            return
        self._client = await self._kube.api()
        self._apps = k8s.AppsV1Api(self._client)
        self._core = k8s.CoreV1Api(self._client)
        self._connected = True

    async def execute(
        self, op: Operation, context: dict[str, Any], *, before_apply: BeforeApply | None = None
    ) -> str:
        await self._connect()
        if context.get(APPLY_SENT):
            # An earlier attempt sent the real call and lost the answer. Sending it again could
            # undo twice or scale "from" the new count; if the change is there, that is the answer.
            proven = await self.prove(op, context)
            if proven is not None:
                log.info("execution_change_proven", op=op.describe(), detail=proven)
                return proven
        match op.kind:
            case OperationKind.ROLLOUT_RESTART:
                return await self._restart(op, context, before_apply)
            case OperationKind.ROLLOUT_UNDO:
                return await self._undo(op, context, before_apply)
            case OperationKind.SCALE:
                return await self._scale(op, context, before_apply)
            case OperationKind.DELETE_POD:
                return await self._delete_pod(op, context, before_apply)
            case OperationKind.CORDON | OperationKind.UNCORDON:
                return await self._cordon(op, context, before_apply)

    async def prove(self, op: Operation, context: dict[str, Any]) -> str | None:
        await self._connect()
        try:
            match op.kind:
                case OperationKind.ROLLOUT_RESTART:
                    account = await self._prove_restart(op, context)
                case OperationKind.ROLLOUT_UNDO:
                    account = await self._prove_undo(op, context)
                case OperationKind.SCALE:
                    account = await self._prove_scale(op, context)
                case OperationKind.DELETE_POD:
                    account = await self._prove_delete_pod(op, context)
                case OperationKind.CORDON | OperationKind.UNCORDON:
                    account = await self._prove_cordon(op, context)
        except ApiException as exc:
            # A workload or node that is gone shows no change of ours; a gone pod is handled
            # where it is the change itself. Anything else is for the caller to classify.
            if exc.status == 404:
                return None
            raise
        return f"{account} {CONFIRMED}" if account is not None else None

    async def survey(self, op: Operation, *, dry_run: bool) -> dict[str, Any]:
        """The facts a plan is made of (operation_specs), read from the target; with
        ``dry_run`` the change is also sent as a server-side dry run, so a refusal shows now.

        Raises what reading raises (a 404 for a target that does not exist), ``StageFailed``
        when the dry run is refused, ``UndoImpossible`` when there is nothing to go back to.
        """
        await self._connect()
        match op.kind:
            case OperationKind.SCALE:
                return await self._survey_scale(op, dry_run)
            case OperationKind.ROLLOUT_RESTART:
                return await self._survey_restart(op, dry_run)
            case OperationKind.ROLLOUT_UNDO:
                return await self._survey_undo(op, dry_run)
            case OperationKind.DELETE_POD:
                return await self._survey_delete_pod(op, dry_run)
            case OperationKind.CORDON | OperationKind.UNCORDON:
                return await self._survey_node(op, dry_run)

    async def _dry_run(self, call: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await call(*args, dry_run=DRY_RUN, _request_timeout=self._timeout, **kwargs)
        except Exception as exc:
            raise StageFailed("dry_run", exc) from exc

    async def _survey_scale(self, op: Operation, dry_run: bool) -> dict[str, Any]:
        workload = await self._read_workload(op)
        if dry_run:
            patch = getattr(self._apps, f"patch_namespaced_{_snake(op.target_kind)}_scale")
            await self._dry_run(patch, op.name, _ns(op), {"spec": {"replicas": op.replicas}})
        return {"replicas": workload.spec.replicas}

    async def _survey_restart(self, op: Operation, dry_run: bool) -> dict[str, Any]:
        workload = await self._read_workload(op)
        if op.target_kind == "daemonset":
            pods = (workload.status.desired_number_scheduled if workload.status else 0) or 0
        else:
            pods = workload.spec.replicas
        if dry_run:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
            await self._dry_run(self._workload_api(op, "patch"), op.name, _ns(op), body)
        return {"replicas": pods, "template": _digest(self._json(workload.spec.template))}

    async def _survey_undo(self, op: Operation, dry_run: bool) -> dict[str, Any]:
        workload = await self._read_workload(op)
        revisions = await self._revisions(op, workload)
        current = self._current_revision(op, workload, revisions)
        live = self._json(workload.spec.template)
        target = _undo_target(op, revisions, current, {})
        if dry_run and _digest(live) != _digest(target.template):
            await self._dry_run(self._workload_api(op, "patch"), op.name, _ns(op), target.patch)
        return {
            "revision": current,
            "image": _images(live),
            "to_revision": target.number,
            "to_image": _images(target.template),
            "same_template": _digest(_unstamped(live)) == _digest(_unstamped(target.template)),
            "template": _digest(live),
            "to_template": _digest(target.template),
        }

    async def _survey_delete_pod(self, op: Operation, dry_run: bool) -> dict[str, Any]:
        pod = await self._core.read_namespaced_pod(op.name, _ns(op), _request_timeout=self._timeout)
        if dry_run:
            only_this = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=pod.metadata.uid))
            await self._dry_run(self._core.delete_namespaced_pod, op.name, _ns(op), body=only_this)
        owner = next((r for r in pod.metadata.owner_references or [] if r.controller), None)
        return {
            "uid": pod.metadata.uid,
            "phase": pod.status.phase if pod.status else None,
            "node": pod.spec.node_name if pod.spec else None,
            "owner": {"kind": owner.kind, "name": owner.name} if owner else None,
        }

    async def _survey_node(self, op: Operation, dry_run: bool) -> dict[str, Any]:
        node = await self._core.read_node(op.name, _request_timeout=self._timeout)
        if dry_run:
            body = {"spec": {"unschedulable": op.kind is OperationKind.CORDON}}
            await self._dry_run(self._core.patch_node, op.name, body)
        pods = await self._core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={op.name}", _request_timeout=self._timeout
        )
        running = [p for p in pods.items if (p.status.phase if p.status else None) not in _ENDED]
        return {
            "unschedulable": bool(node.spec.unschedulable) if node.spec else False,
            "pods": len(running),
        }

    def _current_revision(self, op: Operation, workload: Any, revisions: list[_Revision]) -> int:
        if op.target_kind == "deployment":
            return int((workload.metadata.annotations or {}).get(REVISION, "0"))
        return max((r.number for r in revisions), default=0)

    async def _twice(
        self,
        context: dict[str, Any],
        before_apply: BeforeApply | None,
        call: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Dry run, then the real call with the same arguments."""
        try:
            await call(*args, dry_run=DRY_RUN, _request_timeout=self._timeout, **kwargs)
        except Exception as exc:
            raise StageFailed("dry_run", exc) from exc
        # Set before ``before_apply``, so the context the caller saves there already says that
        # a real call may follow: whoever finds it later proves before acting.
        context[APPLY_SENT] = True
        if before_apply is not None:
            await before_apply()
        try:
            return await call(*args, _request_timeout=self._timeout, **kwargs)
        except Exception as exc:
            raise StageFailed("apply", exc) from exc

    def _workload_api(self, op: Operation, verb: str) -> Any:
        return getattr(self._apps, f"{verb}_namespaced_{_snake(op.target_kind)}")

    async def _read_workload(self, op: Operation) -> Any:
        read = self._workload_api(op, "read")
        return await read(op.name, _ns(op), _request_timeout=self._timeout)

    def _json(self, obj: Any) -> Any:
        return self._client.sanitize_for_serialization(obj)

    async def _restart(
        self, op: Operation, context: dict[str, Any], before_apply: BeforeApply | None
    ) -> str:
        stamp = context.setdefault("restarted_at", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        patch = self._workload_api(op, "patch")
        await self._twice(context, before_apply, patch, op.name, _ns(op), body)
        return _restarted(op, stamp)

    async def _prove_restart(self, op: Operation, context: dict[str, Any]) -> str | None:
        stamp = context.get("restarted_at")
        if stamp is None:
            return None
        workload = await self._read_workload(op)
        metadata = workload.spec.template.metadata
        annotations = (metadata.annotations if metadata else None) or {}
        return _restarted(op, stamp) if annotations.get(RESTARTED_AT) == stamp else None

    async def _scale(
        self, op: Operation, context: dict[str, Any], before_apply: BeforeApply | None
    ) -> str:
        if "scale_from" not in context:
            # Read once: on a retry the workload may already show the new count.
            current = await self._read_workload(op)
            context["scale_from"] = current.spec.replicas
        patch = getattr(self._apps, f"patch_namespaced_{_snake(op.target_kind)}_scale")
        body = {"spec": {"replicas": op.replicas}}
        await self._twice(context, before_apply, patch, op.name, _ns(op), body)
        return _scaled(op, context["scale_from"])

    async def _prove_scale(self, op: Operation, context: dict[str, Any]) -> str | None:
        if "scale_from" not in context:
            return None
        workload = await self._read_workload(op)
        if workload.spec.replicas != op.replicas:
            return None
        return _scaled(op, context["scale_from"])

    async def _delete_pod(
        self, op: Operation, context: dict[str, Any], before_apply: BeforeApply | None
    ) -> str:
        if "pod_uid" not in context:
            pod = await self._core.read_namespaced_pod(
                op.name, _ns(op), _request_timeout=self._timeout
            )
            # The uid tells this pod from a replacement of the same name (a StatefulSet's);
            # the controller lets verification wait for it to recover.
            context["pod_uid"] = pod.metadata.uid
            owner = next((r for r in pod.metadata.owner_references or [] if r.controller), None)
            context["owner"] = (
                {"kind": owner.kind, "name": owner.name, "uid": owner.uid} if owner else None
            )
        # Only this pod: never a replacement that took its name since it was read.
        only_this = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=context["pod_uid"]))
        try:
            await self._twice(
                context,
                before_apply,
                self._core.delete_namespaced_pod,
                op.name,
                _ns(op),
                body=only_this,
            )
        except StageFailed as exc:
            # aiohttp sends a DELETE again by itself when its connection drops; when the first
            # one went through, the repeat finds no pod or a replacement (404, 409), and the
            # pod being gone is what was asked for.
            if exc.stage == "apply" and _http_status(exc.cause) in (404, 409):
                proven = await self.prove(op, context)
                if proven is not None:
                    return proven
            raise
        return _deleted(op)

    async def _prove_delete_pod(self, op: Operation, context: dict[str, Any]) -> str | None:
        uid = context.get("pod_uid")
        if uid is None:
            return None
        try:
            pod = await self._core.read_namespaced_pod(
                op.name, _ns(op), _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return _deleted(op)
            raise
        # A pod in its grace period has been deleted already; it only takes a while to go.
        if pod.metadata.uid != uid or pod.metadata.deletion_timestamp is not None:
            return _deleted(op)
        return None

    async def read_owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A pod's controller as JSON, for the kinds whose strength opsgate can judge."""
        await self._connect()
        reads = {
            "ReplicaSet": self._apps.read_namespaced_replica_set,
            "StatefulSet": self._apps.read_namespaced_stateful_set,
            "DaemonSet": self._apps.read_namespaced_daemon_set,
        }
        if kind not in reads:
            return None
        obj = await reads[kind](name, namespace, _request_timeout=self._timeout)
        result: dict[str, Any] = self._json(obj)
        result.setdefault("kind", kind)
        return result

    async def read(self, op: Operation) -> dict[str, Any]:
        """The target as the API server returns it (JSON), for verification."""
        await self._connect()
        if op.target_kind == "node":
            obj = await self._core.read_node(op.name, _request_timeout=self._timeout)
        else:
            obj = await self._read_workload(op)
        result: dict[str, Any] = self._json(obj)
        return result

    async def pods(self, namespace: str) -> list[dict[str, Any]]:
        await self._connect()
        listing = await self._core.list_namespaced_pod(namespace, _request_timeout=self._timeout)
        items: list[dict[str, Any]] = self._json(listing.items)
        return items

    async def _cordon(
        self, op: Operation, context: dict[str, Any], before_apply: BeforeApply | None
    ) -> str:
        unschedulable = op.kind is OperationKind.CORDON
        context["unschedulable"] = unschedulable
        body = {"spec": {"unschedulable": unschedulable}}
        await self._twice(context, before_apply, self._core.patch_node, op.name, body)
        return _cordoned(op, unschedulable)

    async def _prove_cordon(self, op: Operation, context: dict[str, Any]) -> str | None:
        if "unschedulable" not in context:
            return None
        node = await self._core.read_node(op.name, _request_timeout=self._timeout)
        unschedulable = bool(node.spec.unschedulable) if node.spec else False
        if unschedulable != context["unschedulable"]:
            return None
        return _cordoned(op, unschedulable)

    async def _undo(
        self, op: Operation, context: dict[str, Any], before_apply: BeforeApply | None
    ) -> str:
        workload = await self._read_workload(op)
        revisions = await self._revisions(op, workload)
        current = self._current_revision(op, workload, revisions)
        target = _undo_target(op, revisions, current, context)
        number = context["undo_to_revision"]
        if _digest(self._json(workload.spec.template)) == _digest(target.template):
            return f"{op.target()} already runs the template of revision {number}"
        patch = self._workload_api(op, "patch")
        await self._twice(context, before_apply, patch, op.name, _ns(op), target.patch)
        return _rolled_back(op, number)

    async def _prove_undo(self, op: Operation, context: dict[str, Any]) -> str | None:
        target = context.get("undo_target")
        if target is None:
            return None
        workload = await self._read_workload(op)
        if _digest(self._json(workload.spec.template)) != target["template_digest"]:
            return None
        return _rolled_back(op, context["undo_to_revision"])

    async def _revisions(self, op: Operation, workload: Any) -> list[_Revision]:
        """The workload's own revisions, as kubectl rollout undo finds them."""
        selector = _selector(workload.spec.selector.match_labels)
        uid = workload.metadata.uid
        if op.target_kind == "deployment":
            replica_sets = await self._apps.list_namespaced_replica_set(
                _ns(op), label_selector=selector, _request_timeout=self._timeout
            )
            revisions: list[_Revision] = []
            for rs in replica_sets.items:
                if not _owned_by(rs, uid):
                    continue
                template = copy.deepcopy(self._json(rs.spec.template))
                template.get("metadata", {}).get("labels", {}).pop(POD_TEMPLATE_HASH, None)
                number = int((rs.metadata.annotations or {}).get(REVISION, "0"))
                body = [{"op": "replace", "path": "/spec/template", "value": template}]
                revisions.append(_Revision(number, rs.metadata.name, template, body))
            return revisions
        controller_revisions = await self._apps.list_namespaced_controller_revision(
            _ns(op), label_selector=selector, _request_timeout=self._timeout
        )
        return [
            _Revision(
                int(cr.revision),
                cr.metadata.name,
                ((cr.data or {}).get("spec") or {}).get("template") or {},
                cr.data,
            )
            for cr in controller_revisions.items
            if _owned_by(cr, uid)
        ]


def _undo_target(
    op: Operation, revisions: list[_Revision], current: int, context: dict[str, Any]
) -> _Revision:
    """The revision to return to: chosen once, then found again by its template, because an
    undo gives the revision it returns to the next number."""
    stored = context.get("undo_target")
    if stored is not None:
        found = next(
            (r for r in revisions if _digest(r.template) == stored["template_digest"]), None
        )
        if found is None:
            raise UndoImpossible(
                f"the template of revision {context['undo_to_revision']} of {op.target()} "
                "no longer exists"
            )
        return found
    by_number = {r.number: r for r in revisions}
    # A context saved before targets were kept by content names only the number.
    number = context.get("undo_to_revision")
    if number is None:
        earlier = sorted(n for n in by_number if n < current)
        if not earlier:
            raise UndoImpossible(f"{op.target()} has no revision before {current}")
        number = earlier[-1]
    chosen = by_number.get(number)
    if chosen is None:
        raise UndoImpossible(f"revision {number} of {op.target()} no longer exists")
    context["undo_to_revision"] = number
    context["undo_target"] = {"name": chosen.name, "template_digest": _digest(chosen.template)}
    return chosen


def _digest(template: dict[str, Any]) -> str:
    """A pod template's identity by content: without the labels and markers controllers add to
    their copies, and without empty fields, which Go and the Python client render differently."""
    stripped = copy.deepcopy(template)
    stripped.pop("$patch", None)
    ((stripped.get("metadata") or {}).get("labels") or {}).pop(POD_TEMPLATE_HASH, None)
    canonical = json.dumps(_pruned(stripped), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _unstamped(template: dict[str, Any]) -> dict[str, Any]:
    """A template without the restart stamp: two revisions that differ only by it run the same."""
    stripped = copy.deepcopy(template)
    ((stripped.get("metadata") or {}).get("annotations") or {}).pop(RESTARTED_AT, None)
    return stripped


def _images(template: dict[str, Any]) -> str:
    containers = (template.get("spec") or {}).get("containers") or []
    return ", ".join(str(c.get("image")) for c in containers) or "none"


def _pruned(value: Any) -> Any:
    """``value`` without nulls and empty objects or lists at any depth; None if nothing is left."""
    if isinstance(value, dict):
        kept = {k: v for k, v in ((k, _pruned(v)) for k, v in value.items()) if v is not None}
        return kept or None
    if isinstance(value, list):
        items = [v for v in (_pruned(v) for v in value) if v is not None]
        return items or None
    return value


def _restarted(op: Operation, stamp: str) -> str:
    return f"{op.target()} restarted ({RESTARTED_AT}={stamp})"


def _scaled(op: Operation, before: int | None) -> str:
    return f"{op.target()} scaled from {before} to {op.replicas} replicas"


def _deleted(op: Operation) -> str:
    return f"{op.target()} deleted"


def _cordoned(op: Operation, unschedulable: bool) -> str:
    return f"node {op.name} {'cordoned' if unschedulable else 'uncordoned'}"


def _rolled_back(op: Operation, number: int) -> str:
    return f"{op.target()} rolled back to revision {number}"


def _http_status(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiException) else None


def _ns(op: Operation) -> str:
    if op.namespace is None:
        raise ValueError(f"{op.describe()} needs a namespace")
    return op.namespace


def _snake(kind: str) -> str:
    return {"deployment": "deployment", "statefulset": "stateful_set", "daemonset": "daemon_set"}[
        kind
    ]


def _selector(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _owned_by(obj: Any, uid: str) -> bool:
    return any(ref.uid == uid for ref in obj.metadata.owner_references or [])
