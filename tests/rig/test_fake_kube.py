"""The fake Kubernetes API server, driven through the real kubernetes_asyncio client.

Why: every opsgate remediation test trusts ``FakeKube``. These tests pin down that the unmodified
client (kubeconfig loading, URL building, content-type choice, error mapping) works against it,
and that it reacts the way the real API server and controllers do where opsgate depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import config
from kubernetes_asyncio.client import (
    ApiClient,
    AppsV1Api,
    Configuration,
    CoreV1Api,
    V1DeleteOptions,
)
from kubernetes_asyncio.client.exceptions import ApiException

from opsgate.sandbox.kube_api import FakeKube
from opsgate.sandbox.request_holds import HoldOutcome

RESTARTED = "kubectl.kubernetes.io/restartedAt"
STAMP = "2024-05-01T10:00:00Z"
REVISION = "deployment.kubernetes.io/revision"


async def _client(kubeconfig: Path) -> ApiClient:
    """A client built exactly as opsgate builds one: from a kubeconfig file."""
    cfg = Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return ApiClient(configuration=cfg)


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube() as fake:
        yield fake


@pytest_asyncio.fixture
async def api(kube: FakeKube, tmp_path: Path) -> AsyncIterator[ApiClient]:
    client = await _client(kube.write_kubeconfig(tmp_path / "kubeconfig", "shop"))
    async with client:
        yield client


def _status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    assert exc.value.body is not None
    body: dict[str, Any] = json.loads(exc.value.body)
    assert body["kind"] == "Status"
    assert body["code"] == exc.value.status
    return body


def _revisions(kube: FakeKube, namespace: str) -> dict[str, str]:
    return {
        rs["metadata"]["name"]: rs["metadata"]["annotations"][REVISION]
        for rs in kube.list("replicasets", namespace)
    }


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def _restart_patch() -> dict[str, Any]:
    """What ``kubectl rollout restart`` sends."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED: STAMP}}}}}


@pytest.mark.asyncio
async def test_restart_bumps_generation_and_rolls_a_new_revision(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_deployment("shop", "web", replicas=2)
    before = _revisions(kube, "shop")

    result = await AppsV1Api(api).patch_namespaced_deployment("web", "shop", _restart_patch())

    assert kube.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert result.metadata.generation == 2
    assert result.spec.template.metadata.annotations == {RESTARTED: STAMP}
    after = _revisions(kube, "shop")
    (new_rs,) = set(after) - set(before)
    assert after[new_rs] == "2"
    deployment = kube.get("deployments", "shop", "web")
    assert deployment is not None
    assert deployment["metadata"]["annotations"][REVISION] == "2"
    assert deployment["status"]["observedGeneration"] == 2
    assert deployment["status"]["updatedReplicas"] == 2
    assert deployment["status"]["conditions"][1]["reason"] == "NewReplicaSetAvailable"
    pods = kube.list("pods", "shop")
    assert len(pods) == 2
    assert all(p["metadata"]["name"].startswith(new_rs + "-") for p in pods)
    assert all(_ready(p) for p in pods)


@pytest.mark.asyncio
async def test_dry_run_all_returns_the_result_and_changes_nothing(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_deployment("shop", "web", replicas=2)
    deployment_before = kube.get("deployments", "shop", "web")
    replicasets_before, pods_before = kube.list("replicasets"), kube.list("pods")

    result = await AppsV1Api(api).patch_namespaced_deployment(
        "web", "shop", _restart_patch(), dry_run="All"
    )

    assert kube.requests[-1].query == {"dryRun": "All"}
    assert kube.requests[-1].dry_run
    assert result.spec.template.metadata.annotations == {RESTARTED: STAMP}
    assert result.metadata.generation == 2
    assert deployment_before is not None
    assert result.metadata.resource_version == deployment_before["metadata"]["resourceVersion"]
    assert kube.get("deployments", "shop", "web") == deployment_before
    assert kube.list("replicasets") == replicasets_before
    assert kube.list("pods") == pods_before

    pod = pods_before[0]["metadata"]["name"]
    await CoreV1Api(api).delete_namespaced_pod(pod, "shop", dry_run="All")
    assert kube.list("pods") == pods_before

    with pytest.raises(ApiException) as exc:
        await AppsV1Api(api).patch_namespaced_deployment(
            "web", "shop", _restart_patch(), dry_run="Server"
        )
    assert exc.value.status == 422
    assert 'dryRun: Unsupported value: []string{"Server"}' in _status_of(exc)["message"]


@pytest.mark.asyncio
async def test_scale_subresource_changes_only_replicas(kube: FakeKube, api: ApiClient) -> None:
    kube.add_deployment("shop", "web", replicas=1)
    apps = AppsV1Api(api)
    before = kube.get("deployments", "shop", "web")
    assert before is not None

    scale = await apps.patch_namespaced_deployment_scale(
        "web", "shop", {"spec": {"replicas": 3}, "metadata": {"labels": {"sneaky": "yes"}}}
    )

    sent = kube.requests[-1]
    assert sent.path == "/apis/apps/v1/namespaces/shop/deployments/web/scale"
    assert sent.content_type == "application/strategic-merge-patch+json"
    assert scale.kind == "Scale"
    assert scale.spec.replicas == 3
    after = kube.get("deployments", "shop", "web")
    assert after is not None
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == 2
    assert list(_revisions(kube, "shop").values()) == ["1"]
    assert len(kube.list("pods", "shop")) == 3

    read = await apps.read_namespaced_deployment_scale("web", "shop")
    assert (read.status.replicas, read.status.selector) == (3, "app=web")

    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": -2}})
    assert exc.value.status == 422
    assert _status_of(exc)["message"].startswith('Scale.autoscaling "web" is invalid')


@pytest.mark.asyncio
async def test_undo_by_json_patch_reuses_the_old_replicaset(kube: FakeKube, api: ApiClient) -> None:
    kube.add_deployment("shop", "web", replicas=2, image="shop:1")
    kube.set_image("deployments", "shop", "web", "shop:2")
    apps = AppsV1Api(api)
    listed = await apps.list_namespaced_replica_set("shop", label_selector="app=web")
    old = next(rs for rs in listed.items if rs.metadata.annotations[REVISION] == "1")
    template = api.sanitize_for_serialization(old.spec.template)
    del template["metadata"]["labels"]["pod-template-hash"]  # as kubectl rollout undo does

    result = await apps.patch_namespaced_deployment(
        "web", "shop", [{"op": "replace", "path": "/spec/template", "value": template}]
    )

    assert kube.requests[-1].content_type == "application/json-patch+json"
    assert result.spec.template.spec.containers[0].image == "shop:1"
    revisions = _revisions(kube, "shop")
    assert len(revisions) == 2
    assert revisions[old.metadata.name] == "3"
    reused = kube.get("replicasets", "shop", old.metadata.name)
    assert reused is not None
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert reused["spec"]["replicas"] == 2
    pods = kube.list("pods", "shop")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"shop:1"}

    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment(
            "web", "shop", [{"op": "test", "path": "/spec/replicas", "value": 5}]
        )
    assert exc.value.status == 422
    assert "testing value /spec/replicas failed" in json.dumps(_status_of(exc))


@pytest.mark.asyncio
async def test_statefulset_undo_through_controller_revision_data(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_statefulset("shop", "db", replicas=2, image="db:1")
    kube.set_image("statefulsets", "shop", "db", "db:2")
    apps = AppsV1Api(api)
    sts = await apps.read_namespaced_stateful_set("db", "shop")
    selector = ",".join(f"{k}={v}" for k, v in sts.spec.selector.match_labels.items())
    history = await apps.list_namespaced_controller_revision("shop", label_selector=selector)
    owned = [
        cr
        for cr in history.items
        if any(ref.uid == sts.metadata.uid for ref in cr.metadata.owner_references)
    ]
    assert sorted(cr.revision for cr in owned) == [1, 2]
    first = next(cr for cr in owned if cr.revision == 1)
    assert first.data["spec"]["template"]["$patch"] == "replace"

    await apps.patch_namespaced_stateful_set("db", "shop", first.data)  # what kubectl sends

    after = kube.get("statefulsets", "shop", "db")
    assert after is not None
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "db:1"
    assert "$patch" not in after["spec"]["template"]
    assert after["status"]["updateRevision"] == after["status"]["currentRevision"]
    assert after["status"]["updateRevision"] == first.metadata.name
    revisions = {
        cr["metadata"]["name"]: cr["revision"] for cr in kube.list("controllerrevisions", "shop")
    }
    assert len(revisions) == 2
    assert revisions[first.metadata.name] == 3
    pods = kube.list("pods", "shop")
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1"]
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods} == {
        first.metadata.name
    }


@pytest.mark.asyncio
async def test_create_through_the_api_runs_the_controllers(kube: FakeKube, api: ApiClient) -> None:
    apps, core = AppsV1Api(api), CoreV1Api(api)
    labels = {"app": "api"}
    body: Any = {
        "metadata": {"name": "api", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "surprise": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "api", "image": "api:1"}]},
            },
        },
    }

    with pytest.raises(ApiException) as exc:
        await apps.create_namespaced_deployment("missing", body)
    assert _status_of(exc)["message"] == 'namespaces "missing" not found'
    with pytest.raises(ApiException) as exc:
        await apps.create_namespaced_deployment("shop", body, field_validation="Strict")
    assert exc.value.status == 400

    kube.add_node("node-a")
    namespace: Any = {"metadata": {"name": "shop"}}
    await core.create_namespace(namespace)  # no add_* created it implicitly this time
    created, code, headers = await apps.create_namespaced_deployment_with_http_info("shop", body)
    assert code == 201
    assert headers is not None
    assert headers.getall("Warning") == ['299 - "unknown field \\"spec.surprise\\""']
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert list(_revisions(kube, "shop").values()) == ["1"]
    assert len(kube.list("pods", "shop")) == 2

    job: Any = {
        "metadata": {"generateName": "job-"},
        "spec": {"containers": [{"name": "job", "image": "busybox"}]},
    }
    pod = await core.create_namespaced_pod("shop", job)
    assert pod.metadata.name.startswith("job-")
    assert pod.status.phase == "Pending"  # as created; the "kubelet" runs it right after
    stored = kube.get("pods", "shop", pod.metadata.name)
    assert stored is not None
    assert (stored["status"]["phase"], stored["spec"]["nodeName"]) == ("Running", "node-a")


@pytest.mark.asyncio
async def test_deleting_an_owned_pod_brings_a_ready_replacement(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_node("node-a")
    kube.add_deployment("shop", "web", replicas=2)
    core = CoreV1Api(api)
    before = {p["metadata"]["name"] for p in kube.list("pods", "shop")}
    victim = kube.list("pods", "shop")[0]
    rs_name = victim["metadata"]["ownerReferences"][0]["name"]

    deleted = await core.delete_namespaced_pod(
        victim["metadata"]["name"], "shop", grace_period_seconds=30
    )

    assert kube.requests[-1].query == {"gracePeriodSeconds": "30"}
    assert deleted.metadata.uid == victim["metadata"]["uid"]
    assert deleted.metadata.deletion_timestamp is not None
    pods = (await core.list_namespaced_pod("shop", label_selector="app=web")).items
    (replacement,) = [p for p in pods if p.metadata.name not in before]
    assert len(pods) == 2
    assert replacement.metadata.name.startswith(rs_name + "-")
    assert replacement.status.phase == "Running"
    assert {c.type: c.status for c in replacement.status.conditions}["Ready"] == "True"
    assert replacement.spec.node_name == "node-a"

    gone = await core.delete_namespaced_pod(
        pods[0].metadata.name, "shop", body=V1DeleteOptions(grace_period_seconds=0)
    )
    assert gone.metadata.name == pods[0].metadata.name
    assert len(kube.list("pods", "shop")) == 2


@pytest.mark.asyncio
async def test_cordon_and_uncordon_by_strategic_merge_patch(kube: FakeKube, api: ApiClient) -> None:
    kube.add_node("node-a")
    core = CoreV1Api(api)

    cordoned = await core.patch_node("node-a", {"spec": {"unschedulable": True}})
    assert cordoned.spec.unschedulable is True
    listed = await core.list_node(field_selector="spec.unschedulable=true")
    assert [n.metadata.name for n in listed.items] == ["node-a"]

    uncordoned = await core.patch_node("node-a", {"spec": {"unschedulable": None}})
    assert uncordoned.spec.unschedulable is None

    with pytest.raises(ApiException) as exc:
        await core.patch_node("node-a", {"spec": {"unschedulable": "yes"}})
    assert exc.value.status == 422
    assert "of type bool" in _status_of(exc)["message"]


@pytest.mark.asyncio
async def test_errors_are_real_status_objects(kube: FakeKube, api: ApiClient) -> None:
    kube.add_deployment("shop", "web")
    apps = AppsV1Api(api)

    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment("nope", "shop")
    assert exc.value.status == 404
    assert _status_of(exc) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "group": "apps", "kind": "deployments"},
        "code": 404,
    }

    kube.deny("patch", "deployments", "shop")
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment("web", "shop", _restart_patch())
    assert exc.value.status == 403
    assert _status_of(exc)["message"] == (
        'deployments.apps "web" is forbidden: User "opsgate" cannot patch resource '
        '"deployments" in API group "apps" in the namespace "shop"'
    )
    await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 2}})

    negative: Any = {"metadata": {"name": "web"}, "spec": {"replicas": -1}}
    with pytest.raises(ApiException) as exc:
        await apps.replace_namespaced_deployment_scale("web", "shop", negative)
    assert exc.value.status == 422
    assert _status_of(exc)["reason"] == "Invalid"

    body: Any = api.sanitize_for_serialization(await apps.read_namespaced_deployment("web", "shop"))
    with pytest.raises(ApiException) as exc:
        await apps.create_namespaced_deployment("shop", body | {"metadata": {"name": "web"}})
    assert (exc.value.status, _status_of(exc)["reason"]) == (409, "AlreadyExists")

    stale: Any = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
    with pytest.raises(ApiException) as exc:
        await apps.replace_namespaced_deployment("web", "shop", stale)
    assert (exc.value.status, _status_of(exc)["reason"]) == (409, "Conflict")

    body["spec"]["replicas"] = 4
    replaced = await apps.replace_namespaced_deployment("web", "shop", body)
    assert replaced.spec.replicas == 4


@pytest.mark.asyncio
async def test_injected_faults_then_success(kube: FakeKube, api: ApiClient) -> None:
    kube.add_deployment("shop", "web")
    apps = AppsV1Api(api)
    kube.inject("GET", r"/deployments/web$", 503)
    kube.inject("GET", r"/deployments/web$", 429, retry_after=2)

    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment("web", "shop")
    assert (exc.value.status, _status_of(exc)["reason"]) == (503, "ServiceUnavailable")
    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment("web", "shop")
    assert exc.value.status == 429
    assert exc.value.headers is not None
    assert exc.value.headers["Retry-After"] == "2"

    assert (await apps.read_namespaced_deployment("web", "shop")).metadata.name == "web"
    assert [r.status for r in kube.requests] == [503, 429, 200]


@pytest.mark.asyncio
async def test_dropped_connections_surface_as_aiohttp_errors(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_deployment("shop", "web")
    apps = AppsV1Api(api)

    kube.inject("PATCH", r"/deployments/web$", "drop")
    with pytest.raises(aiohttp.ClientConnectionError):
        await apps.patch_namespaced_deployment("web", "shop", _restart_patch())
    deployment = kube.get("deployments", "shop", "web")
    assert deployment is not None
    assert deployment["metadata"]["generation"] == 1

    # aiohttp silently retries idempotent methods (GET, PUT, DELETE) once on a disconnect,
    # so one dropped GET is invisible to the caller; two are not.
    kube.inject("GET", r"/deployments/web$", "drop")
    assert (await apps.read_namespaced_deployment("web", "shop")).metadata.name == "web"
    kube.inject("GET", r"/deployments/web$", "drop", count=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await apps.read_namespaced_deployment("web", "shop")
    assert [(r.method, r.status) for r in kube.requests] == [
        ("PATCH", None),
        ("GET", None),
        ("GET", 200),
        ("GET", None),
        ("GET", None),
    ]


@pytest.mark.asyncio
async def test_served_faults_apply_the_write_and_lose_the_answer(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_deployment("shop", "web", replicas=1)
    apps = AppsV1Api(api)

    kube.inject("PATCH", r"/deployments/web/scale$", 504, served=True, dry_run=False)
    await apps.patch_namespaced_deployment_scale(
        "web", "shop", {"spec": {"replicas": 2}}, dry_run="All"
    )
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 2}})
    assert (exc.value.status, _status_of(exc)["reason"]) == (504, "Timeout")
    deployment = kube.get("deployments", "shop", "web")
    assert deployment is not None and deployment["spec"]["replicas"] == 2

    kube.inject("PATCH", r"/deployments/web$", "drop", served=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        await apps.patch_namespaced_deployment("web", "shop", _restart_patch())
    deployment = kube.get("deployments", "shop", "web")
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"][RESTARTED] == STAMP

    # A dry run sent in the body of a DELETE is a dry run too.
    pod = kube.list("pods", "shop")[0]["metadata"]["name"]
    kube.inject("DELETE", rf"/pods/{pod}$", 503, dry_run=True)
    with pytest.raises(ApiException) as exc:
        await CoreV1Api(api).delete_namespaced_pod(
            pod, "shop", body=V1DeleteOptions(dry_run=["All"])
        )
    assert exc.value.status == 503
    assert kube.get("pods", "shop", pod) is not None

    assert [(r.method, r.dry_run, r.status) for r in kube.requests] == [
        ("PATCH", True, 200),
        ("PATCH", False, 504),
        ("PATCH", False, None),
        ("DELETE", True, 503),
    ]


@pytest.mark.asyncio
async def test_timeout_fault_holds_until_the_client_gives_up(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_deployment("shop", "web")
    apps = AppsV1Api(api)

    kube.inject("GET", r"/deployments/web$", "timeout")
    with pytest.raises(TimeoutError):
        await apps.read_namespaced_deployment("web", "shop", _request_timeout=0.2)

    kube.inject("GET", r"/deployments/web$", "timeout", delay=0.1)
    assert (await apps.read_namespaced_deployment("web", "shop")).metadata.name == "web"
    assert [r.status for r in kube.requests] == [None, 200]


@pytest.mark.asyncio
async def test_wrong_token_is_401(kube: FakeKube, tmp_path: Path) -> None:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig")
    kubeconfig = json.loads(path.read_text())
    kubeconfig["users"][0]["user"]["token"] = "not-the-token"
    path.write_text(json.dumps(kubeconfig))

    async with await _client(path) as client:
        with pytest.raises(ApiException) as exc:
            await CoreV1Api(client).list_node()
    assert _status_of(exc)["reason"] == "Unauthorized"
    assert exc.value.status == 401


@pytest.mark.asyncio
async def test_patch_flavours_follow_their_specs(kube: FakeKube, api: ApiClient) -> None:
    kube.add_deployment("shop", "web")
    apps = AppsV1Api(api)
    add_env = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "web", "env": [{"name": "MODE", "value": "safe"}]}]
                }
            }
        }
    }

    merged = await apps.patch_namespaced_deployment("web", "shop", add_env)
    container = merged.spec.template.spec.containers[0]
    assert (container.image, container.env[0].value) == ("app:1", "safe")  # merged by name

    replaced = await apps.patch_namespaced_deployment(
        "web",
        "shop",
        {
            "metadata": {"labels": {"tier": "front", "app": None}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "app:3"}]}}},
        },
        _content_type="application/merge-patch+json",
    )  # type: ignore[call-arg]  # not in stub
    assert replaced.metadata.labels == {"tier": "front"}
    assert replaced.spec.template.spec.containers[0].env is None  # merge patch replaces lists

    directive = await apps.patch_namespaced_deployment(
        "web", "shop", {"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}
    )
    assert directive.spec.strategy.type == "Recreate"
    assert directive.spec.strategy.rolling_update is None

    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment(
            "web", "shop", {"spec": {"replicas": 2}}, _content_type="application/apply-patch+yaml"
        )
    assert exc.value.status == 415


@pytest.mark.asyncio
async def test_manual_and_stuck_rollouts(kube: FakeKube, api: ApiClient) -> None:
    kube.add_deployment("shop", "web", replicas=2)
    kube.add_deployment("shop", "api", replicas=1)
    kube.set_rollout_mode("manual", "deployments", "shop", "web")
    kube.set_rollout_mode("stuck", "deployments", "shop", "api")
    apps = AppsV1Api(api)

    await apps.patch_namespaced_deployment("web", "shop", _restart_patch())
    web = await apps.read_namespaced_deployment("web", "shop")
    assert (web.metadata.generation, web.status.observed_generation) == (2, 1)
    web_pods = [p for p in kube.list("pods", "shop") if p["metadata"]["name"].startswith("web-")]
    assert sorted(_ready(p) for p in web_pods) == [False, False, True, True]  # surge, unready
    kube.converge("deployments", "shop", "web")
    web = await apps.read_namespaced_deployment("web", "shop")
    assert (web.status.observed_generation, web.status.updated_replicas) == (2, 2)
    assert (web.status.replicas, web.status.ready_replicas) == (2, 2)

    kube.set_image("deployments", "shop", "api", "api:2")
    api_dep = await apps.read_namespaced_deployment("api", "shop")
    assert api_dep.status.observed_generation == 2
    assert (api_dep.status.updated_replicas, api_dep.status.unavailable_replicas) == (1, 1)
    kube.progress_deadline_exceeded("deployments", "shop", "api")
    progressing = next(
        c
        for c in (await apps.read_namespaced_deployment("api", "shop")).status.conditions
        if c.type == "Progressing"
    )
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")


@pytest.mark.asyncio
async def test_replacement_pods_wait_for_converge_in_manual_mode(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_deployment("shop", "web", replicas=2)
    kube.set_rollout_mode("manual")
    victim = kube.list("pods", "shop")[0]
    rs_name = victim["metadata"]["ownerReferences"][0]["name"]

    await CoreV1Api(api).delete_namespaced_pod(victim["metadata"]["name"], "shop")

    pods = kube.list("pods", "shop")
    assert len(pods) == 2
    (replacement,) = [p for p in pods if not _ready(p)]
    assert replacement["metadata"]["name"] != victim["metadata"]["name"]
    kube.converge("replicasets", "shop", rs_name)  # climbs to the owning deployment
    assert all(_ready(p) for p in kube.list("pods", "shop"))


@pytest.mark.asyncio
async def test_daemonset_runs_one_pod_per_node_and_rolls(kube: FakeKube, api: ApiClient) -> None:
    kube.add_node("node-a")
    kube.add_daemonset("kube-system", "agent")
    kube.add_node("node-b")
    core = CoreV1Api(api)

    pods = (await core.list_namespaced_pod("kube-system", label_selector="app in (agent)")).items
    assert sorted(p.spec.node_name for p in pods) == ["node-a", "node-b"]

    kube.set_image("daemonsets", "kube-system", "agent", "agent:2")
    ds = await AppsV1Api(api).read_namespaced_daemon_set("agent", "kube-system")
    assert (ds.status.desired_number_scheduled, ds.status.updated_number_scheduled) == (2, 2)
    on_a = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
    assert [p.spec.containers[0].image for p in on_a.items] == ["agent:2"]


# --------------------------------------------------------------------------- holds, for crash tests

_KILLABLE_PATCH = """
import asyncio, sys
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, AppsV1Api, Configuration

async def main():
    cfg = Configuration()
    await config.load_kube_config(config_file=sys.argv[1], client_configuration=cfg)
    async with ApiClient(configuration=cfg) as api:
        await AppsV1Api(api).patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 3}})

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def _patching_process(kubeconfig: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """Another process sends a scale patch through the real client; the test may kill it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLABLE_PATCH, str(kubeconfig)
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _restart(apps: AppsV1Api, name: str = "web") -> Any:
    return await apps.patch_namespaced_deployment(name, "shop", _restart_patch())


def _generation(kube: FakeKube) -> int:
    deployment = kube.get("deployments", "shop", "web")
    assert deployment is not None
    return int(deployment["metadata"]["generation"])


@pytest.mark.asyncio
async def test_held_request_is_carried_out_only_when_released(
    kube: FakeKube, api: ApiClient
) -> None:
    kube.add_deployment("shop", "web")
    apps = AppsV1Api(api)
    hold = kube.hold("PATCH", r"/deployments/web$", dry_run=False)

    # The server-side dry run passes: it is not the call being held.
    await apps.patch_namespaced_deployment("web", "shop", _restart_patch(), dry_run="All")
    patch = asyncio.create_task(_restart(apps))
    held = await hold.wait_arrived()

    assert (held.method, held.path, held.dry_run) == (
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/web",
        False,
    )
    assert held.outcome is HoldOutcome.HELD
    assert _generation(kube) == 1
    assert not patch.done()
    hold.release()
    assert (await patch).metadata.generation == 2
    assert [r.outcome for r in hold.requests] == [HoldOutcome.RELEASED]

    # A released hold catches nothing more.
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 3}})
    assert len(hold.requests) == 1
    assert [(r.dry_run, r.status) for r in kube.requests] == [
        (True, 200),
        (False, 200),
        (False, 200),
    ]
    assert all(isinstance(r.at, float) for r in kube.requests)


async def _give_up_by_cancelling(api: ApiClient, patch: asyncio.Task[Any]) -> None:
    patch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await patch


async def _give_up_by_closing(api: ApiClient, patch: asyncio.Task[Any]) -> None:
    await api.close()
    with pytest.raises(aiohttp.ClientError):
        await patch


@pytest.mark.asyncio
@pytest.mark.parametrize("give_up", [_give_up_by_cancelling, _give_up_by_closing])
async def test_held_request_is_dropped_when_the_client_goes_away(
    kube: FakeKube, tmp_path: Path, give_up: Any
) -> None:
    kube.add_deployment("shop", "web")
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", "shop")
    hold = kube.hold("PATCH", r"/deployments/web$")

    async with await _client(kubeconfig) as api:
        patch = asyncio.create_task(_restart(AppsV1Api(api)))
        await hold.wait_arrived()
        await give_up(api, patch)
        dropped = await hold.wait_dropped()
    hold.release()

    async with await _client(kubeconfig) as later:
        deployment = await AppsV1Api(later).read_namespaced_deployment("web", "shop")
    assert deployment.metadata.generation == 1  # the dropped patch was never carried out
    assert dropped.outcome is HoldOutcome.DROPPED
    assert [(r.method, r.status) for r in kube.requests] == [("PATCH", None), ("GET", 200)]


@pytest.mark.asyncio
async def test_held_request_of_a_killed_client_is_never_carried_out(
    kube: FakeKube, api: ApiClient, tmp_path: Path
) -> None:
    kube.add_deployment("shop", "web")
    hold = kube.hold("PATCH", r"/deployments/web$")

    async with _patching_process(kube.write_kubeconfig(tmp_path / "kubeconfig", "shop")) as child:
        await hold.wait_arrived(timeout=60)  # the child imports the client first
        child.kill()
        await child.wait()
        await hold.wait_dropped()
    hold.release()

    deployment = await AppsV1Api(api).read_namespaced_deployment("web", "shop")
    assert deployment.spec.replicas == 1
    assert kube.requests[0].status is None


@pytest.mark.asyncio
async def test_held_answer_comes_after_the_change_is_visible(
    kube: FakeKube, api: ApiClient, tmp_path: Path
) -> None:
    kube.add_deployment("shop", "web")
    apps = AppsV1Api(api)
    hold = kube.hold_answer("PATCH", r"/deployments/", dry_run=False)

    # Refusals are answered at once and do not use up the hold.
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment("nope", "shop", _restart_patch())
    assert exc.value.status == 404
    patch = asyncio.create_task(_restart(apps))
    await hold.wait_arrived()

    async with await _client(kube.write_kubeconfig(tmp_path / "other", "shop")) as other:
        seen = await AppsV1Api(other).read_namespaced_deployment("web", "shop")
    assert seen.metadata.generation == 2  # applied, while the first client still waits
    assert not patch.done()
    assert kube.requests[1].status is None  # not answered yet
    hold.release()
    assert (await patch).metadata.generation == 2
    assert kube.requests[1].status == 200
    assert [r.outcome for r in hold.requests] == [HoldOutcome.RELEASED]


@pytest.mark.asyncio
async def test_held_answer_of_a_killed_client_leaves_the_change_applied(
    kube: FakeKube, api: ApiClient, tmp_path: Path
) -> None:
    kube.add_deployment("shop", "web")
    hold = kube.hold_answer("PATCH", r"/deployments/web$")

    async with _patching_process(kube.write_kubeconfig(tmp_path / "kubeconfig", "shop")) as child:
        await hold.wait_arrived(timeout=60)
        child.kill()
        await child.wait()
        await hold.wait_dropped()

    deployment = await AppsV1Api(api).read_namespaced_deployment("web", "shop")
    assert deployment.spec.replicas == 3
    assert kube.requests[0].status is None  # the answer never went out


async def test_another_clients_scale_and_the_pods_of_a_node(kube: FakeKube, api: ApiClient) -> None:
    """What a plan reads: a count someone else changed, and the pods on one node, across
    namespaces, by field selector as ``kubectl get pods -A --field-selector`` asks."""
    kube.add_node("worker-1")
    kube.add_deployment("shop", "web", replicas=1, image="web:1")
    kube.add_node("worker-2")
    kube.scale("deployments", "shop", "web", 3)
    apps, core = AppsV1Api(api), CoreV1Api(api)
    deployment = await apps.read_namespaced_deployment("web", "shop")
    assert deployment.spec.replicas == 3
    everywhere = await core.list_pod_for_all_namespaces()
    nodes = [p.spec.node_name for p in everywhere.items]
    assert len(nodes) == 3 and set(nodes) <= {"worker-1", "worker-2"}
    on_one = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=worker-1")
    assert [p.spec.node_name for p in on_one.items] == [n for n in nodes if n == "worker-1"]


async def test_another_clients_delete_takes_what_it_owns(kube: FakeKube, api: ApiClient) -> None:
    """A target deleted behind opsgate's back: reads answer 404, and its pods go with it."""
    kube.add_deployment("shop", "web", replicas=2, image="web:1")
    apps, core = AppsV1Api(api), CoreV1Api(api)
    assert len((await core.list_namespaced_pod("shop")).items) == 2
    kube.delete("deployments", "shop", "web")
    with pytest.raises(ApiException) as raised:
        await apps.read_namespaced_deployment("web", "shop")
    assert raised.value.status == 404
    assert (await core.list_namespaced_pod("shop")).items == []
    assert (await apps.list_namespaced_replica_set("shop")).items == []
    assert not [r for r in kube.requests if r.method == "DELETE"], "no request was made"
