"""The executor proves its own change by reading the object, so a lost answer is not repeated.

Why: the API server can apply a write and the answer still never arrive (a gateway's 504, a
dropped connection). The retry must then report the change that happened, with the facts of the
first attempt, instead of failing (the undo target was renumbered, the pod is gone) or
reporting a second, different change (scaled "from" the new count).
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from opsgate.app import load_kube_client
from opsgate.sandbox.kube_api import FakeKube, RecordedRequest
from opsgate.services.kube_executor import (
    APPLY_SENT,
    CONFIRMED,
    RESTARTED_AT,
    KubeExecutor,
    StageFailed,
)
from opsgate.services.operations import Operation, OperationKind
from opsgate.settings import Settings

NS = "shop"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Rig:
    kube: FakeKube
    executor: KubeExecutor


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    kube = FakeKube()
    await kube.start()
    settings = Settings(
        telegram_token="1:x",
        alert_chat_id=-1,
        kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
    )
    client = await load_kube_client(settings)
    try:
        yield Rig(kube, KubeExecutor(client, request_timeout=30))
    finally:
        await client.close()
        await kube.stop()


@dataclass(frozen=True)
class Case:
    op: Operation
    method: str  # of the real call
    path: str  # regex of the real call's path
    applied: Callable[[], bool]  # what the fake's store says
    account: Callable[[dict[str, Any]], str]  # execute's answer, given the context
    start: int  # requests the arrangement itself made


def _deployment(kube: FakeKube, name: str = "web") -> dict[str, Any]:
    obj = kube.get("deployments", NS, name)
    assert obj is not None
    return obj


def _image(kube: FakeKube, plural: str, name: str) -> str:
    obj = kube.get(plural, NS, name)
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def _arrange(kind: str, rig: Rig) -> Case:
    kube = rig.kube

    def case(
        op: Operation,
        method: str,
        path: str,
        applied: Callable[[], bool],
        account: Callable[[dict[str, Any]], str],
    ) -> Case:
        return Case(op, method, path, applied, account, len(kube.requests))

    match kind:
        case "restart":
            kube.add_deployment(NS, "web", replicas=2)

            def restarted() -> bool:
                metadata = _deployment(kube)["spec"]["template"].get("metadata", {})
                return RESTARTED_AT in metadata.get("annotations", {})

            return case(
                Operation(OperationKind.ROLLOUT_RESTART, "deployment", "web", NS),
                "PATCH",
                r"/deployments/web$",
                restarted,
                lambda c: f"deployment shop/web restarted ({RESTARTED_AT}={c['restarted_at']})",
            )
        case "undo-deployment" | "undo-statefulset" | "undo-daemonset":
            target_kind = kind.removeprefix("undo-")
            plural, name = f"{target_kind}s", {"deployment": "web"}.get(target_kind, "db")
            if target_kind == "deployment":
                kube.add_deployment(NS, name)
            elif target_kind == "statefulset":
                kube.add_statefulset(NS, name)
            else:
                kube.add_node("n1")
                kube.add_daemonset(NS, name)
            kube.set_image(plural, NS, name, "app:2")
            return case(
                Operation(OperationKind.ROLLOUT_UNDO, target_kind, name, NS),
                "PATCH",
                rf"/{plural}/{name}$",
                lambda: _image(kube, plural, name) == "app:1",
                lambda _: f"{target_kind} shop/{name} rolled back to revision 1",
            )
        case "scale-deployment" | "scale-statefulset":
            target_kind = kind.removeprefix("scale-")
            plural = f"{target_kind}s"
            if target_kind == "deployment":
                kube.add_deployment(NS, "web", replicas=3)
            else:
                kube.add_statefulset(NS, "web", replicas=3)

            def scaled() -> bool:
                obj = kube.get(plural, NS, "web")
                return obj is not None and obj["spec"]["replicas"] == 5

            return case(
                Operation(OperationKind.SCALE, target_kind, "web", NS, replicas=5),
                "PATCH",
                rf"/{plural}/web/scale$",
                scaled,
                lambda _: f"{target_kind} shop/web scaled from 3 to 5 replicas",
            )
        case "delete-pod":
            kube.add_deployment(NS, "web")
            pod = kube.list("pods", NS)[0]["metadata"]["name"]
            return case(
                Operation(OperationKind.DELETE_POD, "pod", pod, NS),
                "DELETE",
                rf"/pods/{pod}$",
                lambda: kube.get("pods", NS, pod) is None,
                lambda _: f"pod shop/{pod} deleted",
            )
        case "delete-statefulset-pod":
            # The controller recreates the pod under the same name: only the uid tells.
            kube.add_statefulset(NS, "db")
            old = kube.get("pods", NS, "db-0")
            assert old is not None

            def replaced() -> bool:
                new = kube.get("pods", NS, "db-0")
                return new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]

            return case(
                Operation(OperationKind.DELETE_POD, "pod", "db-0", NS),
                "DELETE",
                r"/pods/db-0$",
                replaced,
                lambda _: "pod shop/db-0 deleted",
            )
        case "cordon" | "uncordon":
            kube.add_node("n1")
            if kind == "uncordon":
                await rig.executor.execute(Operation(OperationKind.CORDON, "node", "n1"), {})
            want = kind == "cordon"

            def flagged() -> bool:
                node = kube.get("nodes", None, "n1")
                return node is not None and node["spec"].get("unschedulable", False) is want

            return case(
                Operation(OperationKind(kind), "node", "n1"),
                "PATCH",
                r"/nodes/n1$",
                flagged,
                lambda _: f"node n1 {kind}ed",
            )
    raise AssertionError(kind)


KINDS = [
    "restart",
    "undo-deployment",
    "undo-statefulset",
    "undo-daemonset",
    "scale-deployment",
    "scale-statefulset",
    "delete-pod",
    "delete-statefulset-pod",
    "cordon",
    "uncordon",
]
PATCHING = [k for k in KINDS if not k.startswith("delete")]


def _real_writes(kube: FakeKube, case: Case) -> list[RecordedRequest]:
    return [r for r in kube.requests[case.start :] if r.method in WRITES and not r.dry_run]


def _saved(context: dict[str, Any]) -> dict[str, Any]:
    """The context as the next attempt gets it back from the database."""
    restored: dict[str, Any] = json.loads(json.dumps(context))
    return restored


class Refused(Exception):
    """What a caller's ``before_apply`` raises when it must not go on (its lease is gone)."""


@pytest.mark.parametrize("kind", KINDS)
async def test_proof_once_the_change_is_in_place(rig: Rig, kind: str) -> None:
    case = await _arrange(kind, rig)
    context: dict[str, Any] = {}

    done = await rig.executor.execute(case.op, context)

    assert done == case.account(context)
    assert case.applied()
    assert await rig.executor.prove(case.op, _saved(context)) == f"{done} {CONFIRMED}"


@pytest.mark.parametrize("kind", KINDS)
async def test_no_proof_while_the_change_is_not_made(rig: Rig, kind: str) -> None:
    case = await _arrange(kind, rig)
    assert await rig.executor.prove(case.op, {}) is None  # nothing stored to prove by
    context: dict[str, Any] = {}
    refusal = Refused("lease lost")

    async def refuse() -> None:
        raise refusal

    with pytest.raises(Refused) as raised:
        await rig.executor.execute(case.op, context, before_apply=refuse)

    assert raised.value is refusal
    assert _real_writes(rig.kube, case) == []
    assert not case.applied()
    assert await rig.executor.prove(case.op, _saved(context)) is None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_lost_answer_ends_as_the_change_that_happened(rig: Rig, kind: str) -> None:
    case = await _arrange(kind, rig)
    rig.kube.inject(case.method, case.path, 504, served=True, dry_run=False)
    context: dict[str, Any] = {}
    with pytest.raises(StageFailed) as failed:
        await rig.executor.execute(case.op, context)
    assert failed.value.stage == "apply"
    assert case.applied()

    again = await rig.executor.execute(case.op, _saved(context))

    assert again == f"{case.account(context)} {CONFIRMED}"
    assert len(_real_writes(rig.kube, case)) == 1


@pytest.mark.parametrize("kind", PATCHING)
async def test_a_dropped_connection_loses_the_answer_too(rig: Rig, kind: str) -> None:
    case = await _arrange(kind, rig)
    rig.kube.inject(case.method, case.path, "drop", served=True, dry_run=False)
    context: dict[str, Any] = {}
    with pytest.raises(StageFailed) as failed:
        await rig.executor.execute(case.op, context)
    assert failed.value.stage == "apply"
    assert isinstance(failed.value.cause, aiohttp.ClientConnectionError)
    assert case.applied()

    again = await rig.executor.execute(case.op, _saved(context))

    assert again == f"{case.account(context)} {CONFIRMED}"
    assert len(_real_writes(rig.kube, case)) == 1


@pytest.mark.parametrize(
    ("kind", "repeat_status"), [("delete-pod", 404), ("delete-statefulset-pod", 409)]
)
async def test_a_delete_the_client_sends_again_by_itself_is_still_a_success(
    rig: Rig, kind: str, repeat_status: int
) -> None:
    case = await _arrange(kind, rig)
    rig.kube.inject(case.method, case.path, "drop", served=True, dry_run=False)
    context: dict[str, Any] = {}

    done = await rig.executor.execute(case.op, context)

    assert done == f"{case.account(context)} {CONFIRMED}"
    assert case.applied()  # for the StatefulSet: its replacement pod still runs
    # aiohttp repeats an idempotent request whose connection dropped; the uid precondition
    # keeps the repeat off a replacement of the same name.
    assert [r.status for r in _real_writes(rig.kube, case)] == [None, repeat_status]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_refused_real_call_is_repeated_with_the_same_facts(rig: Rig, kind: str) -> None:
    case = await _arrange(kind, rig)
    rig.kube.inject(case.method, case.path, 503, dry_run=False)
    first: dict[str, Any] = {}
    with pytest.raises(StageFailed) as failed:
        await rig.executor.execute(case.op, first)
    assert failed.value.stage == "apply"
    assert not case.applied()
    context = _saved(first)

    again = await rig.executor.execute(case.op, context)

    assert again == case.account(first)
    assert context == first  # the same stamp, target and "from", not new ones
    assert case.applied()
    assert [r.status for r in _real_writes(rig.kube, case)] == [503, 200]


@pytest.mark.parametrize("kind", KINDS)
async def test_before_apply_runs_once_between_the_dry_run_and_the_real_call(
    rig: Rig, kind: str
) -> None:
    case = await _arrange(kind, rig)
    context: dict[str, Any] = {}
    seen: list[tuple[dict[str, Any], list[RecordedRequest]]] = []

    async def before_apply() -> None:
        writes = [r for r in rig.kube.requests[case.start :] if r.method in WRITES]
        seen.append((copy.deepcopy(context), writes))

    done = await rig.executor.execute(case.op, context, before_apply=before_apply)

    assert done == case.account(context)
    assert len(seen) == 1
    stored, writes_before = seen[0]
    assert [(r.method, r.dry_run, r.status) for r in writes_before] == [(case.method, True, 200)]
    # Nothing was added after the hook: what proves the change was stored before it was sent.
    assert stored == context
    assert stored[APPLY_SENT] is True
    json.dumps(stored)
    writes = [r for r in rig.kube.requests[case.start :] if r.method in WRITES]
    assert [(r.method, r.dry_run) for r in writes[len(writes_before) :]] == [(case.method, False)]


async def test_undo_finds_its_target_after_the_undo_renumbered_it(rig: Rig) -> None:
    case = await _arrange("undo-deployment", rig)
    rig.kube.inject(case.method, case.path, 504, served=True, dry_run=False)
    context: dict[str, Any] = {}
    with pytest.raises(StageFailed):
        await rig.executor.execute(case.op, context)
    revisions = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"
        ]
        for rs in rig.kube.list("replicasets", NS)
    }
    assert revisions == {"app:1": "3", "app:2": "2"}  # revision 1 is no more

    # Without knowing a call was sent, the retry still finds the target by its template.
    unsent = {k: v for k, v in _saved(context).items() if k != APPLY_SENT}
    calls: list[None] = []

    async def before_apply() -> None:
        calls.append(None)

    done = await rig.executor.execute(case.op, unsent, before_apply=before_apply)

    assert done == "deployment shop/web already runs the template of revision 1"
    assert calls == []  # nothing to send, so nothing announced
    assert len(_real_writes(rig.kube, case)) == 1


async def test_read_errors_are_the_callers_to_classify(rig: Rig) -> None:
    case = await _arrange("restart", rig)
    context: dict[str, Any] = {}
    await rig.executor.execute(case.op, context)

    rig.kube.inject("GET", r"/deployments/web$", 503)
    with pytest.raises(ApiException) as exc:
        await rig.executor.prove(case.op, context)
    assert exc.value.status == 503
    rig.kube.inject("GET", r"/deployments/web$", "drop", count=2)
    with pytest.raises(aiohttp.ClientConnectionError):
        await rig.executor.prove(case.op, context)

    gone = Operation(OperationKind.ROLLOUT_RESTART, "deployment", "gone", NS)
    assert await rig.executor.prove(gone, context) is None
    no_node = Operation(OperationKind.CORDON, "node", "gone")
    assert await rig.executor.prove(no_node, {"unschedulable": True}) is None
    assert await rig.executor.prove(case.op, context) == (f"{case.account(context)} {CONFIRMED}")
