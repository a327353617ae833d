"""The Kubernetes manifests in k8s/: they render, pass the schemas and follow the deployment policy.

Every target (the base and each overlay) is rendered with the real ``kubectl kustomize`` and
validated with ``kubernetes-validate --strict`` against several Kubernetes versions. The
Prometheus Operator kinds have no bundled schema: the validator may skip exactly those, and
they are checked here against the structure of the operator's CRDs (and the rules with
``promtool``). The rest pins the deployment policy on the rendered objects.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import promql_parser
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
"""The only kinds kubernetes-validate may skip for want of a schema; checked below instead."""
NAMESPACES = {"base": None, "dev": "modelwatch-dev", "prod": "modelwatch", "gpu": "modelwatch"}
JOBS = {"metrics": "modelwatch-sidecar", "http": "modelwatch-serving"}
"""PodMonitor port → the job label the rules and dashboards select on."""
SIDECAR, SERVER = "modelwatch-sidecar", "model-server"
ADAPTER_RULES = K8S / "overlays" / "prod" / "prometheus-adapter-rules.yaml"
RELEASE_OVERRIDE = """\
patches:
  - target:
      group: monitoring.coreos.com
    patch: |-
      - op: replace
        path: /metadata/labels/release
        value: my-prometheus
"""
"""The release label override documented in k8s/README.md."""
_SENSITIVE = re.compile(r"(TOKEN|PASSWORD|API_KEY|SECRET|_KEY|USERNAME)$")

Doc = dict[str, Any]


KUBECTL_HINT = (
    "kubectl 1.27 or newer (kustomize v5 inside) is needed to render k8s/; Debian's "
    "kubernetes-client (1.20, kustomize v2) is too old. Install the release binary, e.g. "
    "https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl (checked against the .sha256 "
    "file beside it), or the pkgs.k8s.io apt repository"
)


@pytest.fixture(scope="module", autouse=True)
def kubectl_with_kustomize_v5() -> None:
    """Fail every test of the module loudly, with the install hint, without a usable kubectl."""
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


def documents(text: str) -> list[Doc]:
    """The objects of a rendered multi-document YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """Each target rendered once for the module."""
    return {name: kustomize(path) for name, path in TARGETS.items()}


@pytest.fixture(scope="module")
def objects(rendered: dict[str, str]) -> dict[str, list[Doc]]:
    """Each target's rendered objects."""
    return {name: documents(text) for name, text in rendered.items()}


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


# --------------------------------------------------------------------------- schemas


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


def _object(required: tuple[str, ...] = (), **properties: Any) -> Doc:
    """A JSON schema object with exactly these properties (unknown ones refused)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": properties,
        "additionalProperties": False,
    }


def _array(items: Doc) -> Doc:
    return {"type": "array", "items": items}


_TEXT = {"type": "string"}
_FLAG = {"type": "boolean"}
_INT = {"type": "integer"}
_TEXTS = _array(_TEXT)
_TEXT_MAP = {"type": "object", "additionalProperties": _TEXT}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_ACTIONS = ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"]
_ACTIONS += ["lowercase", "uppercase", "keepequal", "dropequal"]
_RELABEL = _object(
    sourceLabels=_array({"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}),
    separator=_TEXT,
    targetLabel=_TEXT,
    regex=_TEXT,
    modulus=_INT,
    replacement=_TEXT,
    action={"enum": _ACTIONS + [a.capitalize() for a in _ACTIONS] + ["HashMod"]},
)
_ENDPOINT = _object(
    port={"type": "string", "minLength": 1},
    portNumber={"type": "integer", "minimum": 1},
    path=_TEXT,
    scheme={"enum": ["http", "https"]},
    params={"type": "object"},
    interval=_DURATION,
    scrapeTimeout=_DURATION,
    honorLabels=_FLAG,
    honorTimestamps=_FLAG,
    relabelings=_array(_RELABEL),
    metricRelabelings=_array(_RELABEL),
)
_RULE = _object(
    ("expr",),
    record=_TEXT,
    alert=_TEXT,
    expr={"type": ["string", "integer"]},
    labels=_TEXT_MAP,
    annotations=_TEXT_MAP,
    keep_firing_for=_DURATION,
    **{"for": _DURATION},
)
_RULE["oneOf"] = [{"required": ["record"]}, {"required": ["alert"]}]
_GROUP = _object(
    ("name",),
    name={"type": "string", "minLength": 1},
    interval=_DURATION,
    query_offset=_DURATION,
    limit=_INT,
    partial_response_strategy=_TEXT,
    labels=_TEXT_MAP,
    rules=_array(_RULE),
)
_METADATA = _object(
    ("name",),
    name={"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
    namespace=_TEXT,
    labels=_TEXT_MAP,
    annotations=_TEXT_MAP,
)


def _operator_kind(kind: str, spec: Doc) -> Doc:
    return _object(
        ("apiVersion", "kind", "metadata", "spec"),
        apiVersion={"const": "monitoring.coreos.com/v1"},
        kind={"const": kind},
        metadata=_METADATA,
        spec=spec,
    )


CRD_SCHEMAS: dict[str, Doc] = {
    # The fields of the operator's v1 CRDs that modelwatch uses, and their close neighbours.
    # Unknown fields are refused, as the API server's strict field validation does.
    "PodMonitor": _operator_kind(
        "PodMonitor",
        _object(
            ("selector",),
            selector=_object(matchLabels=_TEXT_MAP, matchExpressions=_array({"type": "object"})),
            namespaceSelector=_object(any=_FLAG, matchNames=_TEXTS),
            jobLabel=_TEXT,
            podTargetLabels=_TEXTS,
            sampleLimit={"type": "integer", "minimum": 0},
            podMetricsEndpoints=_array(_ENDPOINT),
        ),
    ),
    "PrometheusRule": _operator_kind("PrometheusRule", _object(groups=_array(_GROUP))),
}


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


def test_prometheus_rule_spec_passes_promtool(
    objects: dict[str, list[Doc]], tmp_path: Path
) -> None:
    """The PrometheusRule's groups are a rule file promtool accepts."""
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump(only(objects["prod"], "PrometheusRule")["spec"]))
    result = run_tool("promtool", "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- pod policy


@pytest.mark.parametrize("target", TARGETS)
def test_pod_runs_as_non_root_under_runtime_default_seccomp(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """The pod runs as uid/gid 10001, never root, with the runtime's default seccomp profile."""
    context = pod_spec(objects[target])["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (10001,) * 3
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_locked_down(target: str, objects: dict[str, list[Doc]]) -> None:
    """Each container: read-only root, no privilege escalation, every capability dropped."""
    for item in containers(objects[target]):
        context = item["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, item["name"]
        assert context["allowPrivilegeEscalation"] is False, item["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, item["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_requests_limits_and_three_probes(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Each container requests and limits CPU and memory and has startup, liveness and readiness."""
    names = []
    for item in containers(objects[target]):
        names.append(item["name"])
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(item["resources"][bound]), (item["name"], bound)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in item, (item["name"], probe)
    assert sorted(names) == [SERVER, SIDECAR]


@pytest.mark.parametrize("target", TARGETS)
def test_model_server_probes_its_health_endpoints(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """The model server is probed on /healthz (startup, liveness) and /readyz on port http."""
    server = container(objects[target], SERVER)
    paths = {p: server[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")}
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("target", TARGETS)
def test_sidecar_ingest_is_loopback_and_probed_from_inside_the_pod(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Ingest listens on loopback; the model server and the exec probes use that very address."""
    docs = objects[target]
    host, port = ingest_address(docs)
    assert ipaddress.ip_address(host).is_loopback
    url = f"http://{host}:{port}"
    assert env(container(docs, SERVER))["MODELWATCH_SIDECAR_URL"]["value"] == url
    sidecar = container(docs, SIDECAR)
    expected = {"startupProbe": "healthz", "livenessProbe": "healthz", "readinessProbe": "readyz"}
    for probe, path in expected.items():
        command = sidecar[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"], probe
        assert f'"{url}/{path}"' in command[2], probe


@pytest.mark.parametrize("target", TARGETS)
def test_images_are_pinned(target: str, objects: dict[str, list[Doc]]) -> None:
    """Every image names a tag (or digest) and none uses latest."""
    for item in containers(objects[target]):
        image = item["image"]
        assert image.startswith("ghcr.io/modelwatch/"), image
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and "/" not in tag and tag != "latest"), image


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_come_only_from_secret_references(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Credential variables come from secretKeyRef; no literal secret, no Secret object."""
    docs = objects[target]
    assert not [doc for doc in docs if doc["kind"] == "Secret"]
    for item in containers(docs):
        for name, entry in env(item).items():
            if _SENSITIVE.search(name):
                assert "value" not in entry, name
                assert "secretKeyRef" in entry["valueFrom"], name
            elif "value" in entry and "://" in entry["value"]:
                assert urlsplit(entry["value"]).password is None, name


def resolved_env(docs: list[Doc], name: str, tmp_path: Path) -> dict[str, str]:
    """A container's environment as the program sees it, with stand-ins for references.

    Secret, field and resource references get plausible values; a value naming a file on a
    Secret volume of the container points at a stand-in file instead (the CA certificate).
    """
    item = container(docs, name)
    secret_volumes = {
        v["name"] for v in pod_spec(docs)["volumes"] if "secret" in v or "projected" in v
    }
    secret_mounts = [
        m["mountPath"] for m in item.get("volumeMounts", []) if m["name"] in secret_volumes
    ]
    stand_ins = {"secretKeyRef": "stand-in-secret", "fieldRef": "pod-0", "resourceFieldRef": "2"}
    resolved = {}
    for key, entry in env(item).items():
        if "value" in entry:
            value = entry["value"]
            if any(value.startswith(mount + "/") for mount in secret_mounts):
                value = str(tmp_path / Path(value).name)
                Path(value).write_text("stand-in file\n")
        else:
            (source,) = entry["valueFrom"]
            value = stand_ins[source]
        resolved[key] = value
    return resolved


@pytest.mark.parametrize("target", TARGETS)
def test_container_settings_are_known_keys_the_programs_accept(
    target: str, objects: dict[str, list[Doc]], tmp_path: Path
) -> None:
    """Every MODELWATCH_* variable is a real setting, and both programs validate their env."""
    from serving.settings import ServingSettings
    from serving.settings import env_key as serving_key
    from sidecar import es_settings
    from sidecar.settings import Settings
    from sidecar.settings import env_key as sidecar_key

    docs = objects[target]
    es_keys = {v for k, v in vars(es_settings).items() if k.endswith("_KEY") and isinstance(v, str)}
    es_keys |= {f"{key}_FILE" for key in es_keys} | set(es_settings.KUBERNETES_KEYS.values())
    known = {
        SERVER: {serving_key(f.name) for f in dataclass_fields(ServingSettings)},
        SIDECAR: {sidecar_key(f.name) for f in dataclass_fields(Settings)} | es_keys,
    }
    for name, keys in known.items():
        variables = resolved_env(docs, name, tmp_path)
        assert set(variables) - keys == set(), name
    ServingSettings.from_environ(resolved_env(docs, SERVER, tmp_path))
    settings = Settings.from_sources(resolved_env(docs, SIDECAR, tmp_path))
    if any(url.startswith("https://") for url in settings.es.urls):
        assert settings.es.ca_file is not None, "an https Elasticsearch URL needs its CA"


@pytest.mark.parametrize("target", TARGETS)
def test_service_account_mounts_no_token(target: str, objects: dict[str, list[Doc]]) -> None:
    """The pod's ServiceAccount and the pod itself turn the API token mount off."""
    docs = objects[target]
    account = only(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    spec = pod_spec(docs)
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize("target", TARGETS)
def test_sidecar_gets_the_downward_api_fields_it_ships(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """The sidecar's kubernetes.* document fields come from the downward API."""
    variables = env(container(objects[target], SIDECAR))
    paths = {
        "MODELWATCH_POD_NAME": "metadata.name",
        "MODELWATCH_POD_NAMESPACE": "metadata.namespace",
        "MODELWATCH_NODE_NAME": "spec.nodeName",
    }
    for name, path in paths.items():
        assert variables[name]["valueFrom"]["fieldRef"]["fieldPath"] == path


@pytest.mark.parametrize("target", TARGETS)
def test_spool_lives_on_a_bounded_volume(target: str, objects: dict[str, list[Doc]]) -> None:
    """The spool directory is itself an emptyDir mount, sized above the spool's own limit."""
    docs = objects[target]
    sidecar = container(docs, SIDECAR)
    spool = env(sidecar)["MODELWATCH_SPOOL_DIR"]["value"]
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == spool)
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"
    assert int(env(sidecar)["MODELWATCH_SPOOL_MAX_BYTES"]["value"]) < 2 * 1024**3


@pytest.mark.parametrize("target", TARGETS)
def test_grace_period_covers_each_containers_shutdown(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """The grace period outlasts each container's preStop plus its own shutdown deadlines."""
    from serving import app as serving_app
    from serving import server as serving_server
    from sidecar import server as sidecar_server

    docs = objects[target]
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    pause = {c["name"]: c["lifecycle"]["preStop"]["sleep"]["seconds"] for c in containers(docs)}
    server = (
        serving_server.SHUTDOWN_GRACE_SECONDS
        + serving_app.SHUTDOWN_DRAIN_SECONDS
        + serving_app.LOG_FLUSH_SECONDS
    )
    sidecar = sidecar_server.SHUTDOWN_GRACE_SECONDS + sidecar_server.SHIPPER_STOP_SECONDS
    assert pause[SERVER] + server <= grace
    assert pause[SIDECAR] + sidecar <= grace
    assert pause[SIDECAR] > pause[SERVER], "the sidecar must outlive the model server's drain"


# --------------------------------------------------------------------------- wiring


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
def test_podmonitor_scrapes_named_container_ports_as_the_spec_jobs(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Each PodMonitor port is a container port name and its job label is the shared one."""
    docs = objects[target]
    ports = container_ports(docs)
    owners = {p["name"]: c["name"] for c in containers(docs) for p in c.get("ports", [])}
    jobs = {}
    for endpoint in only(docs, "PodMonitor")["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports, endpoint["port"]
        assert endpoint["path"] == "/metrics"
        relabel = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        jobs[endpoint["port"]] = relabel[0]["replacement"]
    assert jobs == JOBS
    assert (owners["metrics"], ports["metrics"]) == (SIDECAR, 9500)
    assert (owners["http"], ports["http"]) == (SERVER, 8080)


@pytest.mark.parametrize("target", TARGETS)
def test_ingest_port_is_never_exposed(target: str, objects: dict[str, list[Doc]]) -> None:
    """No container port, Service port or NetworkPolicy rule leads to the ingest listener."""
    docs = objects[target]
    _, ingest = ingest_address(docs)
    named = container_ports(docs)
    assert ingest not in named.values()
    for port in only(docs, "Service")["spec"]["ports"]:
        assert ingest not in (port["port"], named.get(port["targetPort"], port["targetPort"]))
    for policy in (doc for doc in docs if doc["kind"] == "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for port in rule.get("ports", []):
                assert named.get(port["port"], port["port"]) != ingest, policy["metadata"]["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_network_policy_admits_only_the_ingress_controller_and_prometheus(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Ingress-nginx reaches http only; Prometheus pods in monitoring reach metrics and http."""
    policy = only(objects[target], "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    rules = [
        (
            [json.dumps(peer, sort_keys=True) for peer in rule["from"]],
            sorted(port["port"] for port in rule["ports"]),
        )
        for rule in policy["ingress"]
    ]
    controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    assert rules == [
        ([json.dumps(controller, sort_keys=True)], ["http"]),
        ([json.dumps(prometheus, sort_keys=True)], ["http", "metrics"]),
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_network_policy_lets_out_dns_and_elasticsearch(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Egress allows DNS over UDP and TCP and the port of the Elasticsearch URL, nothing else."""
    docs = objects[target]
    egress = only(docs, "NetworkPolicy")["spec"]["egress"]
    ports = {(p["port"], p["protocol"]) for rule in egress for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP")} <= ports
    url = env(container(docs, SIDECAR)).get("MODELWATCH_ES_URL")
    if url is not None:
        assert (urlsplit(url["value"]).port, "TCP") in ports
    assert ports <= {(53, "UDP"), (53, "TCP"), (9200, "TCP")}


@pytest.mark.parametrize("target", TARGETS)
def test_monitoring_objects_carry_the_prometheus_release_label(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """Every Prometheus Operator object carries the kube-prometheus-stack release label."""
    for doc in objects[target]:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack", doc["kind"]


def test_release_label_override_reaches_every_monitoring_object(tmp_path: Path) -> None:
    """The override documented in k8s/README.md relabels every operator object, nothing else."""
    body = "resources:\n  - {prod}\n" + RELEASE_OVERRIDE
    docs = documents(kustomize(write_overlay(tmp_path, body)))
    monitoring = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {d["kind"] for d in monitoring} == CRD_KINDS
    assert {d["metadata"]["labels"]["release"] for d in monitoring} == {"my-prometheus"}
    assert RELEASE_OVERRIDE in (K8S / "README.md").read_text()


@pytest.mark.parametrize("target", TARGETS)
def test_namespaces(target: str, objects: dict[str, list[Doc]]) -> None:
    """The base names no namespace; each overlay puts every object in its own."""
    found = {doc["metadata"].get("namespace") for doc in objects[target]}
    assert found == {NAMESPACES[target]}


# --------------------------------------------------------------------------- overlays


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


# --------------------------------------------------------------------------- generated objects


def test_generated_monitoring_files_are_up_to_date() -> None:
    """k8s/base/monitoring/ holds exactly what k8s/generate.py makes from the sources."""
    result = subprocess.run(
        [sys.executable, "k8s/generate.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generate_check_reports_a_stale_file(tmp_path: Path) -> None:
    """--check exits 1 with a diff when a generated file differs from its sources."""
    for source in ("k8s/generate.py", "alerts/rules", "dashboards/grafana/json"):
        target = tmp_path / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / source).is_dir():
            target.mkdir()
            for item in (REPO / source).iterdir():
                (target / item.name).write_bytes(item.read_bytes())
        else:
            target.write_bytes((REPO / source).read_bytes())
    script = [sys.executable, str(tmp_path / "k8s" / "generate.py")]
    (tmp_path / "k8s" / "base" / "monitoring").mkdir(parents=True)
    assert subprocess.run(script, check=False, timeout=60).returncode == 0
    rule_file = tmp_path / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"
    rule_file.write_text(rule_file.read_text().replace("for: 15m", "for: 1m", 1))
    result = subprocess.run(
        [*script, "--check"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 1
    assert re.search(r"^-\s+for: 1m$", result.stdout, re.MULTILINE), result.stdout


def test_prometheus_rule_holds_every_group_of_the_rule_files(
    objects: dict[str, list[Doc]],
) -> None:
    """The PrometheusRule carries every group of alerts/rules/*.yaml, unchanged and in order."""
    expected = [
        group
        for path in sorted((REPO / "alerts" / "rules").glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert expected
    assert only(objects["prod"], "PrometheusRule")["spec"]["groups"] == expected


def test_rules_select_only_jobs_the_podmonitor_creates(objects: dict[str, list[Doc]]) -> None:
    """Every job="…" a rule selects is a job label the PodMonitor gives its targets."""
    rule = only(objects["prod"], "PrometheusRule")
    exprs = [str(r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]
    selected = {job for expr in exprs for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', expr)}
    assert selected
    assert selected <= set(JOBS.values())


def test_every_dashboard_is_a_grafana_config_map(objects: dict[str, list[Doc]]) -> None:
    """Each dashboard JSON file is one ConfigMap labelled for Grafana's sidecar, text unchanged."""
    files = sorted((REPO / "dashboards" / "grafana" / "json").glob("*.json"))
    assert files
    maps = {d["metadata"]["name"]: d for d in objects["prod"] if d["kind"] == "ConfigMap"}
    assert len(maps) == len(files)
    for path in files:
        config_map = maps[f"grafana-dashboard-{path.stem}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"]
        assert config_map["data"] == {path.name: path.read_text()}


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_fits_the_api_server_limit(target: str, objects: dict[str, list[Doc]]) -> None:
    """No rendered object comes near the API server's 1 MiB object limit."""
    for doc in objects[target]:
        assert len(json.dumps(doc).encode()) < 900 * 1024, doc["metadata"]["name"]
