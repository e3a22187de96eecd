"""The Kubernetes manifests under deploy/kubernetes, rendered by kustomize as `kubectl apply -k`
would send them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

KUSTOMIZE_ROOT = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
# What a user applies: the base (deploy/kubernetes itself) and each overlay.
TARGETS = ("", "overlays/sqlite", "overlays/postgres")

Manifest = dict[str, Any]


def render(target: str) -> list[Manifest]:
    """``kubectl kustomize`` of one target; the calling test is skipped without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests cannot be rendered with kustomize")
    built = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE_ROOT / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, f"kubectl kustomize {target or '.'} failed:\n{built.stderr}"
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
