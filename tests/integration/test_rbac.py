"""The RBAC in deploy/kubernetes grants exactly what opsgate uses: nothing less, nothing more.

Why: a Role that lacks a verb fails in production, at the first alert that needs it (a 403 mid
incident); a Role with a verb too many is a door nobody watches. So every allowlisted operation
and its verification run through opsgate's real runtime against the Kubernetes stand-in, every
request it made is turned into the RBAC attribute the API server would check, and that set is
compared with the rules of the rendered manifests.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsgate.sandbox.kube_api import FakeKube, RecordedRequest
from opsgate.sandbox.telegram_api import FakeTelegram
from tests.builders import CAROL, alert, am_payload, policy
from tests.e2e.rig import CHAT_ID, Rig
from tests.e2e.test_approval_loop import approve_data
from tests.e2e.test_commands import ask
from tests.manifests import TARGETS, Manifest, of_kind, one, render

NS = "shop"
SERVICE_ACCOUNT = ("opsgate", "opsgate")  # (namespace, name)
# Paths that are not resources. Every authenticated user may GET /version (the default
# system:public-info-viewer ClusterRole), so no rule of ours grants it.
PUBLIC_PATHS = {"/version", "/version/"}
_GROUPS = {"/api/v1/": "", "/apis/apps/v1/": "apps"}


@dataclass(frozen=True, order=True)
class Access:
    """One RBAC attribute: what the API server's authorizer checks for one request."""

    verb: str
    group: str
    resource: str  # with its subresource: "deployments/scale"
    namespaced: bool

    def __str__(self) -> str:
        scope = "namespaced" if self.namespaced else "cluster"
        return f"{self.verb} {self.resource}.{self.group or 'core'} ({scope})"


def access_of(request: RecordedRequest) -> Access:
    """The attribute a request is authorized by. A dry run needs the verb of the real call."""
    prefix = next(p for p in _GROUPS if request.path.startswith(p))
    parts = request.path[len(prefix) :].split("/")
    namespaced = len(parts) >= 3 and parts[0] == "namespaces"
    if namespaced:
        parts = parts[2:]
    resource, name, sub = parts[0], parts[1] if len(parts) > 1 else None, parts[2:]
    verb = {
        "GET": "get" if name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }[request.method]
    return Access(verb, _GROUPS[prefix], "/".join([resource, *sub]), namespaced)


def granted(rule: Manifest, *, namespaced: bool) -> set[Access]:
    """The attributes one rule grants; a wildcard or a narrowing field fails the test at once."""
    unexpected = set(rule) - {"apiGroups", "resources", "verbs"}
    assert not unexpected, f"rule {rule} has {unexpected}: this test only reads plain rules"
    for field in ("apiGroups", "resources", "verbs"):
        assert "*" not in rule[field], f"rule {rule} grants '*' in {field}"
    return {
        Access(verb, group, resource, namespaced)
        for verb, group, resource in itertools.product(
            rule["verbs"], rule["apiGroups"], rule["resources"]
        )
    }


@dataclass(frozen=True)
class Grants:
    by_namespace: dict[str, set[Access]]  # what a Role bound to opsgate grants there
    cluster: set[Access]  # what a ClusterRole bound cluster-wide grants


def grants_of(manifests: list[Manifest]) -> Grants:
    """What the service account may do, following the bindings that name it."""
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(manifests, "Role")
    }
    cluster_roles = {r["metadata"]["name"]: r for r in of_kind(manifests, "ClusterRole")}
    by_namespace: dict[str, set[Access]] = {}
    for binding in of_kind(manifests, "RoleBinding"):
        namespace = binding["metadata"]["namespace"]
        assert _names_opsgate(binding), f"RoleBinding {namespace}/{binding['metadata']['name']}"
        ref = binding["roleRef"]
        assert ref["kind"] == "Role", f"{namespace}: bind a Role, not a shared ClusterRole"
        role = roles.pop((namespace, ref["name"]))
        access = set().union(*(granted(r, namespaced=True) for r in role["rules"]))
        by_namespace.setdefault(namespace, set()).update(access)
    cluster: set[Access] = set()
    for binding in of_kind(manifests, "ClusterRoleBinding"):
        assert _names_opsgate(binding), f"ClusterRoleBinding {binding['metadata']['name']}"
        role = cluster_roles.pop(binding["roleRef"]["name"])
        cluster |= set().union(*(granted(r, namespaced=False) for r in role["rules"]))
    assert not roles and not cluster_roles, f"roles bound to nobody: {roles} {cluster_roles}"
    return Grants(by_namespace, cluster)


def _names_opsgate(binding: Manifest) -> bool:
    return [(s["kind"], s.get("namespace"), s["name"]) for s in binding["subjects"]] == [
        ("ServiceAccount", *SERVICE_ACCOUNT)
    ]


# Every allowlisted operation, on every kind it accepts. A pod of each controller kind is
# deleted, because the check after a delete reads the pod's controller, whatever its kind.
ACTIONS = [
    f"kubectl rollout restart deployment/web -n {NS}",
    f"kubectl rollout restart statefulset/db -n {NS}",
    f"kubectl rollout restart daemonset/agent -n {NS}",
    f"kubectl rollout undo deployment/web -n {NS}",
    f"kubectl rollout undo statefulset/db -n {NS}",
    f"kubectl rollout undo daemonset/agent -n {NS}",
    f"kubectl scale deployment/web --replicas=3 -n {NS}",
    f"kubectl scale statefulset/db --replicas=3 -n {NS}",
    f"kubectl delete pod/{{deployment}} -n {NS}",
    f"kubectl delete pod/db-0 -n {NS}",
    f"kubectl delete pod/{{daemonset}} -n {NS}",
    "kubectl cordon node-1",
    "kubectl uncordon node-1",
]
VERIFIED = "🔎 verified:"
NOT_VERIFIED = ("cordon", "uncordon")  # a node has no rollout to wait for


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return {target or ".": render(target) for target in TARGETS}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    telegram = FakeTelegram()
    kube = FakeKube()
    await telegram.start()
    await kube.start()
    telegram.add_chat(CHAT_ID, type="supergroup", title="On-call", is_forum=True)
    kube.add_node("node-1")
    for add, name in ((kube.add_deployment, "web"), (kube.add_statefulset, "db")):
        add(NS, name, replicas=2, image=f"{name}:1")
    kube.add_daemonset(NS, "agent", image="agent:1")
    # Earlier revisions, so that every undo has one to go back to.
    for plural, name in (("deployments", "web"), ("statefulsets", "db"), ("daemonsets", "agent")):
        kube.set_image(plural, NS, name, f"{name}:2")
    one_approval = {"low": 1, "medium": 1, "high": 1, "critical": 1}
    rig = Rig(
        telegram,
        kube,
        policy(quorum=one_approval),
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'opsgate.db'}",
    )
    rig.overrides["verify_poll_seconds"] = 0.2
    await rig.start()
    try:
        yield rig
    finally:
        await rig.stop()
        await kube.stop()
        await telegram.stop()


def _pod_of(kube: FakeKube, owner_kind: str) -> str:
    return next(
        p["metadata"]["name"]
        for p in kube.list("pods", NS)
        if any(r["kind"] == owner_kind for r in p["metadata"].get("ownerReferences", []))
    )


async def _run(rig: Rig, number: int, action: str) -> None:
    """Post an alert proposing ``action``, approve it, wait for its result and verification.

    The real call's answer is lost once (applied, then a 504), so the retry proves the change
    by reading the object: those reads need their grants too.
    """
    method = "DELETE" if action.split()[1] == "delete" else "PATCH"
    rig.kube.inject(method, ".", 504, served=True, dry_run=False)
    await rig.post_alert(am_payload(f"g{number}", alert(f"fp{number}", action=action)))
    await rig.telegram.wait_for(lambda: len(rig.cards()) > number, timeout=30)
    card = max(rig.cards(), key=lambda m: m.message_id)
    tap = rig.telegram.tap(
        CHAT_ID, card.message_id, rig.telegram.user(CAROL, "carol"), approve_data(card)
    )
    await rig.telegram.wait_answer(tap)
    done = len(rig.kube.requests)
    result = (await rig.wait_reply(card.message_id, timeout=30)).plain_text
    assert "Succeeded" in result and "confirmed by reading" in result, f"{action}: {result}"
    if action.split()[1] in NOT_VERIFIED:
        return
    if action.endswith(f"pod/db-0 -n {NS}"):
        # The check after deleting a StatefulSet's pod never passes: it leaves out the pod by
        # name, and the replacement has the same name. Its reads are what RBAC needs to see.
        await rig.eventually(lambda: _verification_looked(rig.kube.requests[done:]), timeout=30)
        return
    await rig.wait_text(card.message_id, VERIFIED, timeout=30)


def _verification_looked(requests: list[RecordedRequest]) -> bool:
    paths = [(r.method, r.path) for r in requests]
    return ("GET", f"/apis/apps/v1/namespaces/{NS}/statefulsets/db") in paths and (
        "GET",
        f"/api/v1/namespaces/{NS}/pods",
    ) in paths


async def test_the_rules_grant_exactly_what_the_operations_use(
    rig: Rig, rendered: dict[str, list[Manifest]]
) -> None:
    for number, action in enumerate(ACTIONS):
        # Named when it is its turn: the restarts and undos before it replaced the pods.
        pods = {
            "deployment": _pod_of(rig.kube, "ReplicaSet"),
            "daemonset": _pod_of(rig.kube, "DaemonSet"),
        }
        await _run(rig, number, action.format(**pods))
    status = await ask(rig, CHAT_ID, CAROL, "carol", "/status")
    assert "Kubernetes API: reachable" in status.plain_text

    requests = [r for r in rig.kube.requests if r.path not in PUBLIC_PATHS]
    assert {r.path for r in rig.kube.requests} & PUBLIC_PATHS, "/status asked no API server"
    namespaces = {
        r.path.split("/")[r.path.split("/").index("namespaces") + 1]
        for r in requests
        if "/namespaces/" in r.path
    }
    assert namespaces == {NS}
    used = {access_of(r) for r in requests}
    used_in_namespace = {a for a in used if a.namespaced}
    used_cluster = {a for a in used if not a.namespaced}

    for target, manifests in rendered.items():
        deployment = one(manifests, "Deployment")
        runs_as = (
            deployment["metadata"]["namespace"],
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
        )
        assert runs_as == SERVICE_ACCOUNT, f"{target}: the pod runs as {runs_as}"
        grants = grants_of(manifests)
        assert NS in grants.by_namespace, f"{target}: no Role for namespace {NS}"
        for namespace, access in grants.by_namespace.items():
            _same(f"{target}, Role in {namespace}", granted=access, used=used_in_namespace)
        _same(f"{target}, ClusterRole", granted=grants.cluster, used=used_cluster)


def _same(where: str, *, granted: set[Access], used: set[Access]) -> None:
    missing = sorted(used - granted)
    extra = sorted(granted - used)
    assert not missing, f"{where} lacks what opsgate uses: {', '.join(map(str, missing))}"
    assert not extra, f"{where} grants what opsgate never uses: {', '.join(map(str, extra))}"
