"""The manifests under deploy/kubernetes are what a cluster accepts and what opsgate needs.

Every rendered object is checked against the Kubernetes OpenAPI schemas (kubernetes-validate
ships them, so no cluster and no network are needed), strictly: an unknown or misspelt field is
an error, not something the API server silently drops. Then the facts a pod depends on: the
image's numeric user, a read-only root with a writable /tmp, the probes, the settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from opsgate.metrics import Metrics
from tests.manifests import KUSTOMIZE_ROOT, TARGETS, Manifest, of_kind, one, render

# The oldest release the manifests are meant for, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
DOCKERFILE = KUSTOMIZE_ROOT.parent / "Dockerfile"


@pytest.fixture(scope="module", params=TARGETS, ids=lambda t: t or "base")
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    return render(request.param)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(
    manifests: list[Manifest], version: str
) -> None:
    for manifest in manifests:
        name = f"{manifest['kind']} {manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{name} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}"
            )


def _container(manifests: list[Manifest]) -> Manifest:
    (container,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container["env"]}


def test_the_pod_runs_as_the_images_numeric_user(manifests: list[Manifest]) -> None:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    image_user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert image_user, "the Dockerfile must name its user by number, or runAsNonRoot refuses it"
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, image_user.groups()))
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(manifests)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert {"requests", "limits"} <= set(container["resources"])


def test_probes_and_settings(manifests: list[Manifest]) -> None:
    container = _container(manifests)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "http", "containerPort": 8080} in container["ports"]
    env = _env(container)
    assert env["OPSGATE_HTTP_HOST"]["value"] == "0.0.0.0"
    assert env["OPSGATE_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The policy file is the ConfigMap's key, mounted where the setting points.
    policy = Path(env["OPSGATE_POLICY_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(policy.parent))
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = next(
        c
        for c in of_kind(manifests, "ConfigMap")
        if c["metadata"]["name"] == volume["configMap"]["name"]
    )
    assert policy.name in config_map["data"]
    secrets = {s["metadata"]["name"]: s for s in of_kind(manifests, "Secret")}
    tokens = next(e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e)
    assert "OPSGATE_TELEGRAM_TOKEN" in secrets[tokens]["data"]


def test_the_sqlite_overlay_keeps_one_replica_and_its_file() -> None:
    manifests = render("overlays/sqlite")
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "opsgate-data"}}
    assert one(manifests, "PersistentVolumeClaim")["metadata"]["name"] == "opsgate-data"
    env = _env(_container(manifests))
    assert env["OPSGATE_DATABASE_URL"]["value"] == "sqlite+aiosqlite:////data/opsgate.db"


def test_the_postgres_overlay_shares_its_settings_across_replicas() -> None:
    manifests = render("overlays/postgres")
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] > 1
    env = _env(_container(manifests))
    # From one Secret, so every replica has the same value (README "Running several replicas").
    for name in ("OPSGATE_DATABASE_URL", "OPSGATE_TELEGRAM_WEBHOOK_SECRET"):
        assert set(env[name]) == {"name", "valueFrom"}, f"{name} must come from a Secret"
        assert "secretKeyRef" in env[name]["valueFrom"]
    names = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "data" not in names
    settings = next(
        c
        for c in of_kind(manifests, "ConfigMap")
        if c["metadata"]["name"].startswith("opsgate-settings")
    )
    assert settings["data"]["OPSGATE_TELEGRAM_WEBHOOK_URL"].startswith("https://")


def test_no_rule_grants_a_wildcard_or_secrets() -> None:
    manifests = render("")
    for role in of_kind(manifests, "Role") + of_kind(manifests, "ClusterRole"):
        for rule in role["rules"]:
            values = rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert "*" not in values, f"{role['metadata']['name']}: {rule}"
            assert "secrets" not in rule["resources"], f"{role['metadata']['name']}: {rule}"


def test_every_namespace_the_policy_names_has_its_rbac() -> None:
    policy = yaml.safe_load((KUSTOMIZE_ROOT / "base" / "policy.yaml").read_text())
    named = {ns for role in policy["roles"].values() for ns in role["namespaces"]} - {"*"}
    with_role = {r["metadata"]["namespace"] for r in of_kind(render(""), "Role")}
    assert named == with_role


def test_the_monitoring_examples_are_valid_yaml_of_their_kinds() -> None:
    # ServiceMonitor and PrometheusRule are the Prometheus Operator's CRDs: no schema ships
    # with kubernetes-validate, so only their shape is checked here.
    kinds = {
        doc["kind"]
        for path in sorted((KUSTOMIZE_ROOT / "monitoring").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    }
    assert kinds == {"ServiceMonitor", "PrometheusRule"}


def test_the_example_alerts_use_metrics_opsgate_exports() -> None:
    rule = yaml.safe_load((KUSTOMIZE_ROOT / "monitoring" / "prometheusrule.yaml").read_text())
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\bopsgate_[a-z_]+", expr)}
    # What a scrape shows for each family, whether or not it has samples yet.
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
    }
    exported = {
        f"{family.name}{suffix}"
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    assert used and used <= exported, used - exported
