"""Rendering k8s/ for the manifest tests, and reading the rendered objects.

The committed targets (the base and each overlay) are rendered with the real
``kubectl kustomize`` once per test process; ``kubernetes-validate --strict`` checks a rendered
stream against several Kubernetes versions. Each ``test_k8s_*`` module declares its own
fixtures on top of these functions (pytest finds fixtures only in the module or a conftest).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import run_tool

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
TARGETS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "prod": K8S / "overlays" / "prod",
    "gpu": K8S / "overlays" / "gpu",
}
KUBERNETES_VERSIONS = ("1.30", "1.33", "1.37")
"""The oldest supported (preStop sleep, PDB unhealthyPodEvictionPolicy), one between, the newest."""
CRD_KINDS = frozenset({"PodMonitor", "PrometheusRule"})
"""The only kinds kubernetes-validate may skip for want of a schema; ``_k8s_crds`` checks them."""
SIDECAR, SERVER = "modelwatch-sidecar", "model-server"

Doc = dict[str, Any]


KUBECTL_HINT = (
    "kubectl 1.27 or newer (kustomize v5 inside) is needed to render k8s/; Debian's "
    "kubernetes-client (1.20, kustomize v2) is too old. Install the release binary, e.g. "
    "https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl (checked against the .sha256 "
    "file beside it), or the pkgs.k8s.io apt repository"
)


def require_kubectl_with_kustomize_v5() -> None:
    """Fail the test loudly, with the install hint, without a kubectl that has kustomize v5."""
    if shutil.which("kubectl") is None:
        pytest.fail(f"required tool 'kubectl' is not on PATH. {KUBECTL_HINT}", pytrace=False)
    result = run_tool("kubectl", "version", "--client", "-o", "json")
    found = ""
    if result.returncode == 0:
        found = str(json.loads(result.stdout).get("kustomizeVersion", ""))
    major = re.match(r"v(\d+)\.", found)
    if major is None or int(major.group(1)) < 5:
        pytest.fail(f"kubectl has kustomize {found or 'unknown'}. {KUBECTL_HINT}", pytrace=False)


def kustomize(directory: Path) -> str:
    """The output of ``kubectl kustomize directory``; the test fails with kubectl's error."""
    result = run_tool("kubectl", "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    return result.stdout


@functools.cache
def _rendered_target(name: str) -> str:
    """A committed target rendered once per test process (the manifests do not change meanwhile)."""
    return kustomize(TARGETS[name])


def documents(text: str) -> list[Doc]:
    """The objects of a rendered multi-document YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def rendered_targets() -> dict[str, str]:
    """Each committed target's rendered text, by target name."""
    return {name: _rendered_target(name) for name in TARGETS}


def target_objects() -> dict[str, list[Doc]]:
    """Each committed target's rendered objects, freshly parsed, by target name."""
    return {name: documents(text) for name, text in rendered_targets().items()}


def only(docs: list[Doc], kind: str) -> Doc:
    """The one object of ``kind``."""
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[Doc]) -> Doc:
    """The Deployment's pod spec."""
    spec: Doc = only(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def containers(docs: list[Doc]) -> Iterator[Doc]:
    """Every container of the pod, init containers included."""
    spec = pod_spec(docs)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def container(docs: list[Doc], name: str) -> Doc:
    """The pod's container called ``name``."""
    return next(c for c in containers(docs) if c["name"] == name)


def env(item: Doc) -> dict[str, Doc]:
    """A container's env entries by name."""
    return {entry["name"]: entry for entry in item.get("env", [])}


def container_ports(docs: list[Doc]) -> dict[str, int]:
    """Every container port of the pod, by name."""
    return {p["name"]: p["containerPort"] for c in containers(docs) for p in c.get("ports", [])}


def ingest_address(docs: list[Doc]) -> tuple[str, int]:
    """The sidecar's ingest listen address from its environment."""
    host, _, port = env(container(docs, SIDECAR))["MODELWATCH_INGEST_ADDR"]["value"].rpartition(":")
    return host.strip("[]"), int(port)


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``kubernetes-validate --strict`` on ``path`` for every version in KUBERNETES_VERSIONS."""
    versions = [arg for v in KUBERNETES_VERSIONS for arg in ("-k", v)]
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *versions, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_schema_valid(text: str, tmp_path: Path) -> None:
    """Every object passes the strict schemas of every version; only CRD kinds are skipped."""
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(text)
    result = validate(manifest)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    skipped = re.findall(r"^WARN .*Couldn't find schema for kind (\S+)", output, re.MULTILINE)
    assert set(skipped) <= CRD_KINDS, output
    assert len(re.findall(r"^WARN ", output, re.MULTILINE)) == len(skipped), output
    core = [doc for doc in documents(text) if doc["kind"] not in CRD_KINDS]
    passed = re.findall(r"^INFO .* passed for resource", output, re.MULTILINE)
    assert len(passed) == len(core) * len(KUBERNETES_VERSIONS), output


def write_overlay(tmp_path: Path, body: str) -> Path:
    """A throwaway overlay in ``tmp_path`` (kustomize wants paths relative to it)."""
    prod = os.path.relpath(TARGETS["prod"], tmp_path)
    loadbalancer = os.path.relpath(K8S / "components" / "loadbalancer", tmp_path)
    text = body.format(prod=prod, loadbalancer=loadbalancer)
    (tmp_path / "kustomization.yaml").write_text(text)
    return tmp_path
