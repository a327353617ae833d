"""The deployment policy on the rendered k8s/ objects: security, resources, probes, network.

Each target (the base and each overlay) is rendered with the real ``kubectl kustomize``; the
tests read the pod, its containers and its NetworkPolicy: a locked-down non-root pod, pinned
images, secrets only by reference, settings the programs accept, shutdown deadlines that fit
the grace period, and an ingest port that never leaves the pod.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import fields as dataclass_fields
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

from tests.deploy._k8s import (
    SERVER,
    SIDECAR,
    TARGETS,
    Doc,
    container,
    container_ports,
    containers,
    env,
    ingest_address,
    only,
    pod_spec,
)

pytestmark = pytest.mark.usefixtures("kubectl_with_kustomize_v5")

_SENSITIVE = re.compile(r"(TOKEN|PASSWORD|API_KEY|SECRET|_KEY|USERNAME)$")


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
    """Ingest's TCP listener is on loopback, and the sidecar's exec probes use that very address."""
    docs = objects[target]
    host, port = ingest_address(docs)
    assert ipaddress.ip_address(host).is_loopback
    url = f"http://{host}:{port}"
    sidecar = container(docs, SIDECAR)
    expected = {"startupProbe": "healthz", "livenessProbe": "healthz", "readinessProbe": "readyz"}
    for probe, path in expected.items():
        command = sidecar[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"], probe
        assert f'"{url}/{path}"' in command[2], probe


@pytest.mark.parametrize("target", TARGETS)
def test_model_server_logs_over_the_sidecars_socket_on_a_shared_volume(
    target: str, objects: dict[str, list[Doc]]
) -> None:
    """The unix:// URL names the sidecar's socket, in a folder both mount from one tmpfs volume."""
    docs = objects[target]
    socket = env(container(docs, SIDECAR))["MODELWATCH_INGEST_SOCKET"]["value"]
    assert env(container(docs, SERVER))["MODELWATCH_SIDECAR_URL"]["value"] == f"unix://{socket}"
    folder = str(PurePosixPath(socket).parent)
    volumes = {}
    for item in containers(docs):
        (mount,) = [m for m in item.get("volumeMounts", []) if m["mountPath"] == folder]
        assert mount.get("readOnly", False) is False, item["name"]
        assert "subPath" not in mount, item["name"]
        volumes[item["name"]] = mount["name"]
    assert volumes[SERVER] == volumes[SIDECAR]
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == volumes[SIDECAR])
    assert volume["emptyDir"]["medium"] == "Memory"
    assert volume["emptyDir"]["sizeLimit"] == "1Mi"


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
