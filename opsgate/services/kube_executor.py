"""Runs a typed operation against Kubernetes the way kubectl does: dry run first, then real.

``context`` is kept in the database between attempts so that a retry repeats exactly the
same change (the same restartedAt stamp, the same target revision) instead of a new one.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api

from opsgate.services.operations import Operation, OperationKind

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
DRY_RUN = "All"


class Executor(Protocol):
    async def execute(
        self,
        op: Operation,
        context: dict[str, Any],
        *,
        before_apply: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """Apply ``op``; return a one-line account of what changed; raise on failure."""
        ...

    async def prove(self, op: Operation, context: dict[str, Any]) -> str | None: ...


class StageFailed(Exception):
    """Says whether the dry run or the real call failed, so the audit log can tell them apart."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {cause}")
        self.stage = stage
        self.cause = cause


class UndoImpossible(Exception):
    """There is no earlier revision to return to."""


class KubeExecutor:
    def __init__(self, api_client: ApiClient, request_timeout: float) -> None:
        self._client = api_client
        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._timeout = request_timeout
        self._before_apply: Callable[[], Awaitable[None]] | None = None

    async def execute(
        self,
        op: Operation,
        context: dict[str, Any],
        *,
        before_apply: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        self._before_apply = before_apply
        match op.kind:
            case OperationKind.ROLLOUT_RESTART:
                return await self._restart(op, context)
            case OperationKind.ROLLOUT_UNDO:
                return await self._undo(op, context)
            case OperationKind.SCALE:
                return await self._scale(op)
            case OperationKind.DELETE_POD:
                return await self._delete_pod(op, context)
            case OperationKind.CORDON | OperationKind.UNCORDON:
                return await self._cordon(op)

    async def _twice(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Dry run, then the real call with the same arguments."""
        try:
            await call(*args, dry_run=DRY_RUN, _request_timeout=self._timeout, **kwargs)
        except Exception as exc:
            raise StageFailed("dry_run", exc) from exc
        if self._before_apply is not None:
            await self._before_apply()
        try:
            return await call(*args, _request_timeout=self._timeout, **kwargs)
        except Exception as exc:
            raise StageFailed("apply", exc) from exc

    async def prove(self, op: Operation, context: dict[str, Any]) -> str | None:
        return None

    def _workload_api(self, op: Operation, verb: str) -> Any:
        return getattr(self._apps, f"{verb}_namespaced_{_snake(op.target_kind)}")

    async def _restart(self, op: Operation, context: dict[str, Any]) -> str:
        stamp = context.setdefault("restarted_at", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        await self._twice(self._workload_api(op, "patch"), op.name, _ns(op), body)
        return f"{op.target()} restarted ({RESTARTED_AT}={stamp})"

    async def _scale(self, op: Operation) -> str:
        read = self._workload_api(op, "read")
        current = await read(op.name, _ns(op), _request_timeout=self._timeout)
        before = current.spec.replicas
        patch = getattr(self._apps, f"patch_namespaced_{_snake(op.target_kind)}_scale")
        await self._twice(patch, op.name, _ns(op), {"spec": {"replicas": op.replicas}})
        return f"{op.target()} scaled from {before} to {op.replicas} replicas"

    async def _delete_pod(self, op: Operation, context: dict[str, Any]) -> str:
        if "owner" not in context:
            # Remember the pod's controller, so verification can wait for it to recover.
            pod = await self._core.read_namespaced_pod(
                op.name, _ns(op), _request_timeout=self._timeout
            )
            owner = next((r for r in pod.metadata.owner_references or [] if r.controller), None)
            context["owner"] = (
                {"kind": owner.kind, "name": owner.name, "uid": owner.uid} if owner else None
            )
        await self._twice(self._core.delete_namespaced_pod, op.name, _ns(op))
        return f"{op.target()} deleted"

    async def read_owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A pod's controller as JSON, for the kinds whose strength opsgate can judge."""
        reads = {
            "ReplicaSet": self._apps.read_namespaced_replica_set,
            "StatefulSet": self._apps.read_namespaced_stateful_set,
            "DaemonSet": self._apps.read_namespaced_daemon_set,
        }
        if kind not in reads:
            return None
        obj = await reads[kind](name, namespace, _request_timeout=self._timeout)
        result: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        result.setdefault("kind", kind)
        return result

    async def read(self, op: Operation) -> dict[str, Any]:
        """The target as the API server returns it (JSON), for verification."""
        if op.target_kind == "node":
            obj = await self._core.read_node(op.name, _request_timeout=self._timeout)
        else:
            read = self._workload_api(op, "read")
            obj = await read(op.name, _ns(op), _request_timeout=self._timeout)
        result: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        return result

    async def pods(self, namespace: str) -> list[dict[str, Any]]:
        listing = await self._core.list_namespaced_pod(namespace, _request_timeout=self._timeout)
        items: list[dict[str, Any]] = self._client.sanitize_for_serialization(listing.items)
        return items

    async def _cordon(self, op: Operation) -> str:
        unschedulable = op.kind is OperationKind.CORDON
        body = {"spec": {"unschedulable": unschedulable}}
        await self._twice(self._core.patch_node, op.name, body)
        return f"node {op.name} {'cordoned' if unschedulable else 'uncordoned'}"

    async def _undo(self, op: Operation, context: dict[str, Any]) -> str:
        if op.target_kind == "deployment":
            return await self._undo_deployment(op, context)
        return await self._undo_with_controller_revisions(op, context)

    async def _undo_deployment(self, op: Operation, context: dict[str, Any]) -> str:
        deployment = await self._apps.read_namespaced_deployment(
            op.name, _ns(op), _request_timeout=self._timeout
        )
        selector = _selector(deployment.spec.selector.match_labels)
        listing = await self._apps.list_namespaced_replica_set(
            _ns(op), label_selector=selector, _request_timeout=self._timeout
        )
        owned = {
            int((rs.metadata.annotations or {}).get(REVISION, "0")): rs
            for rs in listing.items
            if _owned_by(rs, deployment.metadata.uid)
        }
        current = int((deployment.metadata.annotations or {}).get(REVISION, "0"))
        target = context.get("undo_to_revision")
        if target is None:
            earlier = sorted(r for r in owned if r < current)
            if not earlier:
                raise UndoImpossible(f"{op.target()} has no revision before {current}")
            target = earlier[-1]
            context["undo_to_revision"] = target
        rs = owned.get(target)
        if rs is None:
            raise UndoImpossible(f"revision {target} of {op.target()} no longer exists")
        template = self._client.sanitize_for_serialization(rs.spec.template)
        template = copy.deepcopy(template)
        template.get("metadata", {}).get("labels", {}).pop(POD_TEMPLATE_HASH, None)
        live = self._client.sanitize_for_serialization(deployment.spec.template)
        if live == template:
            return f"{op.target()} already runs the template of revision {target}"
        body = [{"op": "replace", "path": "/spec/template", "value": template}]
        await self._twice(self._apps.patch_namespaced_deployment, op.name, _ns(op), body)
        return f"{op.target()} rolled back to revision {target}"

    async def _undo_with_controller_revisions(self, op: Operation, context: dict[str, Any]) -> str:
        read = self._workload_api(op, "read")
        workload = await read(op.name, _ns(op), _request_timeout=self._timeout)
        selector = _selector(workload.spec.selector.match_labels)
        listing = await self._apps.list_namespaced_controller_revision(
            _ns(op), label_selector=selector, _request_timeout=self._timeout
        )
        owned = {
            int(cr.revision): cr for cr in listing.items if _owned_by(cr, workload.metadata.uid)
        }
        target = context.get("undo_to_revision")
        if target is None:
            revisions = sorted(owned)
            if len(revisions) < 2:
                raise UndoImpossible(f"{op.target()} has no earlier revision")
            target = revisions[-2]
            context["undo_to_revision"] = target
        revision = owned.get(target)
        if revision is None:
            raise UndoImpossible(f"revision {target} of {op.target()} no longer exists")
        await self._twice(self._workload_api(op, "patch"), op.name, _ns(op), revision.data)
        return f"{op.target()} rolled back to revision {target}"


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
