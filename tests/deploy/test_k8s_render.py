"""k8s/ renders with kustomize and every object passes the schemas of the API server.

Every target (the base and each overlay) is rendered with the real ``kubectl kustomize`` and
validated with ``kubernetes-validate --strict`` against several Kubernetes versions. The
Prometheus Operator kinds have no bundled schema: the validator may skip exactly those, and
they are checked here against the structure of the operator's CRDs instead. The objects then
fit together: namespaces, selectors and the API server's size limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy._k8s import (
    CRD_KINDS,
    K8S,
    TARGETS,
    Doc,
    assert_schema_valid,
    only,
    validate,
)
from tests.deploy._k8s_crds import CRD_SCHEMAS

pytestmark = pytest.mark.usefixtures("kubectl_with_kustomize_v5")

NAMESPACES = {"base": None, "dev": "modelwatch-dev", "prod": "modelwatch", "gpu": "modelwatch"}


@pytest.mark.parametrize("target", TARGETS)
def test_target_renders_and_passes_strict_schemas(
    target: str, rendered: dict[str, str], tmp_path: Path
) -> None:
    """Each target renders and every object validates strictly on every chosen version."""
    assert_schema_valid(rendered[target], tmp_path)


def test_validation_catches_an_unknown_field(rendered: dict[str, str], tmp_path: Path) -> None:
    """The schema check is live: an unknown container field fails it."""
    broken = rendered["prod"].replace(
        "imagePullPolicy: IfNotPresent", "imagePullPolicy: IfNotPresent\n        colour: red", 1
    )
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(broken)
    result = validate(manifest)
    assert result.returncode != 0
    assert "'colour' was unexpected" in result.stdout


@pytest.mark.parametrize("target", TARGETS)
def test_operator_objects_match_the_crd_structure(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Every PodMonitor and PrometheusRule fits the operator's v1 CRD structure."""
    found = [doc for doc in objects[target] if doc["kind"] in CRD_KINDS]
    assert any(doc["kind"] == "PodMonitor" for doc in found)
    for doc in found:
        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
    rules = [doc for doc in found if doc["kind"] == "PrometheusRule"]
    for rule in rules:
        names = [group["name"] for group in rule["spec"]["groups"]]
        assert len(names) == len(set(names)), "group names must be unique (a list-map key)"


def test_crd_check_refuses_a_misspelt_field() -> None:
    """The CRD structure check is live: a misspelt endpoint field fails it."""
    monitor = yaml.safe_load((K8S / "base" / "monitoring" / "podmonitor.yaml").read_text())
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(monitor, CRD_SCHEMAS["PodMonitor"])


@pytest.mark.parametrize("target", TARGETS)
def test_selectors_match_the_pod(target: str, objects: dict[str, list[Doc]]) -> None:
    """Deployment, Service, PDB, NetworkPolicy and PodMonitor all select the pod's labels."""
    docs = objects[target]
    labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": only(docs, "Deployment")["spec"]["selector"]["matchLabels"],
        "Service": only(docs, "Service")["spec"]["selector"],
        "PodDisruptionBudget": only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": only(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        "PodMonitor": only(docs, "PodMonitor")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector, kind
        assert selector.items() <= labels.items(), kind
    ingress = only(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = only(docs, "Service")
    assert ingress["name"] == service["metadata"]["name"]
    assert ingress["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("target", TARGETS)
def test_namespaces(target: str, objects: dict[str, list[Doc]]) -> None:
    """The base names no namespace; each overlay puts every object in its own."""
    found = {doc["metadata"].get("namespace") for doc in objects[target]}
    assert found == {NAMESPACES[target]}


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_fits_the_api_server_limit(target: str, objects: dict[str, list[Doc]]) -> None:
    """No rendered object comes near the API server's 1 MiB object limit."""
    for doc in objects[target]:
        assert len(json.dumps(doc).encode()) < 900 * 1024, doc["metadata"]["name"]
