"""What each overlay of k8s/ changes: replicas and autoscaling, ingress, GPU, LoadBalancer.

Dev runs one small replica without autoscaling or Elasticsearch; prod and gpu autoscale on
CPU, memory and the request rate that prometheus-adapter derives; gpu asks for a GPU; the
LoadBalancer component opens only the http port. Each target is rendered with the real
``kubectl kustomize``.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

from tests.deploy._k8s import (
    K8S,
    REPO,
    SERVER,
    SIDECAR,
    TARGETS,
    Doc,
    assert_schema_valid,
    container,
    documents,
    env,
    kustomize,
    only,
    pod_spec,
    write_overlay,
)

pytestmark = pytest.mark.usefixtures("kubectl_with_kustomize_v5")

ADAPTER_RULES = K8S / "overlays" / "prod" / "prometheus-adapter-rules.yaml"


def test_dev_runs_one_small_replica_without_autoscaling_or_elasticsearch(
    objects: dict[str, list[Doc]],
) -> None:
    """Dev: one replica, no HPA, file shipping, and the fleet-wide rules and dashboards left out."""
    docs = objects["dev"]
    assert only(docs, "Deployment")["spec"]["replicas"] == 1
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"HorizontalPodAutoscaler", "PrometheusRule", "ConfigMap"}
    assert "MODELWATCH_ES_URL" not in env(container(docs, SIDECAR))
    assert container(docs, SERVER)["resources"]["limits"]["memory"] == "512Mi"


@pytest.mark.parametrize("target", ["prod", "gpu"])
def test_prod_runs_three_replicas_autoscaled_on_the_adapter_metric(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Prod: three replicas at least, scaled on CPU, memory and the request rate per pod."""
    docs = objects[target]
    hpa = only(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 3
    resources = {m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"}
    assert resources == {"cpu", "memory"}
    pods = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert pods == [adapter_rule()["name"]["as"]]


@pytest.mark.parametrize("target", TARGETS)
def test_replica_count_is_written_only_where_no_autoscaler_owns_it(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """With an HPA the Deployment names no replicas (an apply would fight it); without, it does."""
    docs = objects[target]
    deployment = only(docs, "Deployment")
    autoscalers = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    if autoscalers:
        (hpa,) = autoscalers
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"]
    else:
        assert deployment["spec"]["replicas"] >= 1


def test_dev_and_prod_ingresses_can_share_one_controller(objects: dict[str, list[Doc]]) -> None:
    """Dev and prod never route the same host and path (ingress-nginx refuses a duplicate)."""
    routes = {}
    for target in ("dev", "prod"):
        rules = only(objects[target], "Ingress")["spec"]["rules"]
        routes[target] = {
            (rule.get("host", "*"), path["path"])
            for rule in rules
            for path in rule["http"]["paths"]
        }
    assert routes["dev"]
    assert routes["prod"]
    assert not routes["dev"] & routes["prod"]


def adapter_rule() -> Doc:
    """The prometheus-adapter rule shipped with the prod overlay."""
    values = yaml.safe_load(ADAPTER_RULES.read_text())
    rules: list[Doc] = values["rules"]["custom"]
    assert len(rules) == 1
    return rules[0]


def test_adapter_rule_derives_the_metric_from_the_request_rate() -> None:
    """The adapter's query is a 2m rate of the model server's request count, per pod."""
    rule = adapter_rule()
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    series = "modelwatch_serving_request_duration_seconds_count"
    assert re.fullmatch(rule["name"]["matches"], series)
    selector = promql_parser.parse(rule["seriesQuery"])
    assert selector.name == series
    # The adapter fills these in for a request about the pods of one namespace.
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="modelwatch",pod=~"a|b"')
        .replace("<<.GroupBy>>", "pod")
    )
    expr = promql_parser.parse(query)
    assert isinstance(expr, promql_parser.AggregateExpr)
    assert isinstance(expr.expr, promql_parser.Call)
    assert expr.expr.func.name == "rate"
    matrix = expr.expr.args[0]
    assert matrix.range == datetime.timedelta(minutes=2)
    assert matrix.vector_selector.name == series
    matchers = {(m.name, m.value) for m in matrix.vector_selector.matchers.matchers}
    route = "/v1/models/{name}:predict"
    assert ("route", route) in matchers
    assert f'_Route("{route}"' in (REPO / "serving" / "app.py").read_text()
    assert ("job", "modelwatch-serving") in matchers


def test_gpu_overlay_requests_and_tolerates_a_gpu(objects: dict[str, list[Doc]]) -> None:
    """GPU: the CUDA image asks for one GPU, tolerates the GPU taint and selects GPU nodes."""
    docs = objects["gpu"]
    server = container(docs, SERVER)
    assert server["image"].startswith("ghcr.io/modelwatch/modelwatch-serving-gpu:")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    spec = pod_spec(docs)
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    for other in ("base", "dev", "prod"):
        limits = container(objects[other], SERVER)["resources"]["limits"]
        assert "nvidia.com/gpu" not in limits, other


def test_loadbalancer_component_opens_only_the_http_port(tmp_path: Path) -> None:
    """The LoadBalancer component makes the Service external and admits only http from outside."""
    body = "namespace: modelwatch\nresources:\n  - {prod}\ncomponents:\n  - {loadbalancer}\n"
    text = kustomize(write_overlay(tmp_path, body))
    validation = tmp_path / "validation"
    validation.mkdir()
    assert_schema_valid(text, validation)
    docs = documents(text)
    assert only(docs, "Service")["spec"]["type"] == "LoadBalancer"
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    extra = policies["modelwatch-model-loadbalancer"]["spec"]
    assert [p["port"] for rule in extra["ingress"] for p in rule["ports"]] == ["http"]
