"""docker-compose.yml, the local stack: valid Compose, wired to files that exist, checked configs.

No Docker here: the file is checked against the Compose Specification's JSON schema (vendored in
tests/support/schemas/), every path it mounts or builds from is looked up in the repository, and
the configurations it mounts are checked by the real tools (promtool, amtool) at the repository
paths the mounts map to. Container paths are translated back to repository paths through the
service's own bind mounts, so a mount that points at the wrong folder fails here, not at
`docker compose up`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from serving.settings import ServingSettings
from serving.settings import env_key as serving_env_key
from sidecar import es_settings
from sidecar.settings import Settings
from sidecar.settings import env_key as sidecar_env_key
from tests.support.tools import run_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "support" / "schemas" / "compose-spec.json"
PROMETHEUS_CONFIG = PurePosixPath("/etc/prometheus/prometheus.yml")
RULE_FILES = {"drift.yaml", "latency-errors.yaml", "data-quality.yaml", "health.yaml"}
DASHBOARD_UIDS = {"modelwatch-serving", "modelwatch-drift", "modelwatch-health"}
ONE_SHOT = {"demo-model", "es-setup", "kibana-import"}


@dataclass(frozen=True)
class Mount:
    """One bind mount: a repository path seen inside a container."""

    source: Path
    target: PurePosixPath


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _bind_mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/")):
                continue  # a named volume
        elif volume.get("type") == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        mounts.append(Mount((ROOT / source).resolve(), PurePosixPath(target)))
    return mounts


def _host_path(service: dict[str, Any], container_path: PurePosixPath) -> Path:
    """The repository path that ``container_path`` shows, through the deepest covering mount."""
    covering = [
        m
        for m in _bind_mounts(service)
        if container_path == m.target or m.target in container_path.parents
    ]
    if not covering:
        pytest.fail(f"{container_path} is not inside any bind mount of the service")
    mount = max(covering, key=lambda m: len(m.target.parts))
    return mount.source.joinpath(*container_path.relative_to(mount.target).parts)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else "\n".join(map(str, command))


def test_compose_file_matches_the_compose_specification() -> None:
    """docker-compose.yml validates against the Compose Specification JSON schema."""
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(_compose())
    ]
    assert errors == []


def test_the_schema_check_rejects_an_unknown_service_key() -> None:
    """The vendored schema is strict: a misspelt service key is an error, not ignored."""
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = {"services": {"model-server": {"image": "x:1", "healthchek": {}}}}
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_every_bind_mount_source_exists() -> None:
    """Every bind-mounted path is in the repository (Docker would create a missing one empty)."""
    missing = [
        f"{name}: {mount.source.relative_to(ROOT)}"
        for name, service in _services().items()
        for mount in _bind_mounts(service)
        if not mount.source.exists()
    ]
    assert missing == []


def test_build_contexts_dockerfiles_and_targets_exist() -> None:
    """Every build names an existing context, Dockerfile and (when given) stage of it."""
    problems = []
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            continue
        context = ROOT / build["context"]
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        if not context.is_dir() or not dockerfile.is_file():
            problems.append(f"{name}: {build}")
            continue
        stages = re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text())
        if "target" in build and build["target"] not in stages:
            problems.append(f"{name}: target {build['target']!r} not in {stages}")
    assert problems == []


def test_images_are_pinned_and_never_latest() -> None:
    """Every image has an explicit tag, never `latest`; pulled images name an exact version."""
    problems = []
    for name, service in _services().items():
        image = service.get("image")
        if image is None:
            problems.append(f"{name}: no image name")
            continue
        repository, _, tag = image.rpartition(":")
        if not repository or "/" in tag or tag in {"", "latest"}:
            problems.append(f"{name}: {image} has no pinned tag")
        elif "build" not in service and not re.match(r"^v?\d+\.\d+\.\d+", tag):
            problems.append(f"{name}: {image} is not an exact version")
    assert problems == []


def test_prometheus_config_passes_promtool_with_the_mounted_rule_files(tmp_path: Path) -> None:
    """The compose Prometheus config passes promtool, its rule globs mapped to the repo's rules.

    Inside the container, rule_files resolve against /etc/prometheus/; the test maps each glob
    through the service's mounts to a repository path and rewrites the config with those paths,
    so promtool checks the very files the container will load.
    """
    service = _services()["prometheus"]
    assert f"--config.file={PROMETHEUS_CONFIG}" in service["command"]
    config_file = _host_path(service, PROMETHEUS_CONFIG)
    config = yaml.safe_load(config_file.read_text())
    rewritten, loaded = [], set()
    for pattern in config["rule_files"]:
        in_container = PROMETHEUS_CONFIG.parent / pattern
        host_dir = _host_path(service, in_container.parent)
        matched = sorted(host_dir.glob(in_container.name))
        assert matched, f"rule glob {pattern} matches nothing at {host_dir}"
        loaded.update(p.name for p in matched)
        rewritten.append(str(host_dir / in_container.name))
    assert loaded == RULE_FILES
    config["rule_files"] = rewritten
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = run_tool("promtool", "check", "config", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(name in result.stdout for name in RULE_FILES), result.stdout


def test_prometheus_scrapes_the_two_jobs_as_one_pod() -> None:
    """Both modelwatch jobs are scraped with namespace/pod labels; the pod is the same one."""
    services = _services()
    config = yaml.safe_load(_host_path(services["prometheus"], PROMETHEUS_CONFIG).read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    ports = {"modelwatch-sidecar": "9500", "modelwatch-serving": "8080"}
    pods = set()
    for job, port in ports.items():
        (static,) = jobs[job]
        (target,) = static["targets"]
        host, _, target_port = target.partition(":")
        assert host in services, target
        assert target_port == port, target
        assert static["labels"]["namespace"] == "compose"
        pods.add(static["labels"]["pod"])
    assert pods == {"model-server"}
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]


def test_scrape_interval_matches_the_grafana_data_source() -> None:
    """Grafana's $__rate_interval assumes the scrape interval the compose Prometheus uses."""
    services = _services()
    config = yaml.safe_load(_host_path(services["prometheus"], PROMETHEUS_CONFIG).read_text())
    grafana = services["grafana"]
    datasources = _host_path(
        grafana, PurePosixPath("/etc/grafana/provisioning/datasources/prometheus.yaml")
    )
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]
    url = urlsplit(source["url"])
    assert url.hostname in services
    assert any(p.endswith(f":{url.port}") for p in services[url.hostname]["ports"])


def test_sidecar_shares_the_model_servers_network_namespace() -> None:
    """The sidecar joins the model server's namespace; ingest stays on loopback, as in a pod."""
    services = _services()
    sidecar, server = services["sidecar"], services["model-server"]
    assert sidecar["network_mode"] == "service:model-server"
    assert "ports" not in sidecar
    ingest = _environment(sidecar)["MODELWATCH_INGEST_ADDR"]
    assert ingest.rpartition(":")[0] == "127.0.0.1"
    assert f"http://{ingest}/readyz" in "\n".join(sidecar["healthcheck"]["test"])
    metrics_port = _environment(sidecar)["MODELWATCH_METRICS_ADDR"].rpartition(":")[2]
    assert f"127.0.0.1:{metrics_port}:{metrics_port}" in server["ports"]


def _named_volumes(service: dict[str, Any]) -> dict[PurePosixPath, tuple[str, bool]]:
    """The service's named volumes: container path → (volume name, read-only)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            if not source.startswith((".", "/")):
                mounts[PurePosixPath(target)] = (source, mode == ["ro"])
        elif volume.get("type") == "volume":
            mounts[PurePosixPath(volume["target"])] = (
                volume["source"],
                bool(volume.get("read_only")),
            )
    return mounts


def test_model_server_logs_over_the_sidecars_socket_on_a_shared_volume() -> None:
    """The unix:// URL names the sidecar's socket, in a tmpfs volume both mount and both own."""
    services = _services()
    sidecar, server = services["sidecar"], services["model-server"]
    socket = _environment(sidecar)["MODELWATCH_INGEST_SOCKET"]
    assert _environment(server)["MODELWATCH_SIDECAR_URL"] == f"unix://{socket}"
    folder = PurePosixPath(socket).parent
    mounted = {
        name: _named_volumes(services[name]).get(folder) for name in ("sidecar", "model-server")
    }
    assert mounted["sidecar"] == mounted["model-server"]
    assert mounted["sidecar"] is not None
    volume, read_only = mounted["sidecar"]
    assert not read_only
    options = _compose()["volumes"][volume]["driver_opts"]
    assert options["type"] == "tmpfs"
    mount_options = dict(item.partition("=")[::2] for item in options["o"].split(","))
    # Owned by the user both images run as, so the sidecar may create the socket there.
    for name in mounted:
        build = services[name]["build"]
        dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
        user = f"USER {mount_options['uid']}:{mount_options['gid']}"
        assert re.search(rf"(?m)^{user}$", dockerfile), (name, user)


def test_sidecar_and_model_server_settings_are_valid() -> None:
    """The compose environments use only known keys and pass the programs' own validation."""
    services = _services()
    sidecar_env = _environment(services["sidecar"])
    server_env = _environment(services["model-server"])
    es_keys = {
        value
        for name, value in vars(es_settings).items()
        if name.endswith("_KEY") and isinstance(value, str)
    }
    es_keys |= {f"{key}_FILE" for key in es_keys} | set(es_settings.KUBERNETES_KEYS.values())
    sidecar_keys = {sidecar_env_key(f.name) for f in dataclass_fields(Settings)} | es_keys
    server_keys = {serving_env_key(f.name) for f in dataclass_fields(ServingSettings)}
    assert set(sidecar_env) - sidecar_keys == set()
    assert set(server_env) - server_keys == set()
    settings = Settings.from_sources(sidecar_env)
    ServingSettings.from_environ(server_env)
    es_host = urlsplit(settings.es.urls[0]).hostname
    assert es_host in services
    setup_env = _environment(services["es-setup"])
    setup = es_settings.EsSettings.from_environ(setup_env)
    assert (setup.urls, setup.namespace) == (settings.es.urls, settings.es.namespace)


def test_alertmanager_config_and_its_secret_files_are_mounted() -> None:
    """The mounted Alertmanager config passes amtool; every credential file it names is mounted."""
    service = _services()["alertmanager"]
    config_path = PurePosixPath("/etc/alertmanager/alertmanager.yaml")
    assert f"--config.file={config_path}" in service["command"]
    config_file = _host_path(service, config_path)
    result = run_tool("amtool", "check-config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    named = set(re.findall(r"_file:\s*(\S+)", config_file.read_text()))
    assert named, "the Alertmanager config names no credential file"
    missing = [p for p in sorted(named) if not _host_path(service, PurePosixPath(p)).is_file()]
    assert missing == []


def test_grafana_loads_the_generated_dashboards() -> None:
    """The provisioned dashboard folder is mounted from dashboards/grafana/json with all uids."""
    grafana = _services()["grafana"]
    provider_file = _host_path(
        grafana, PurePosixPath("/etc/grafana/provisioning/dashboards/modelwatch.yaml")
    )
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    folder = _host_path(grafana, PurePosixPath(provider["options"]["path"]))
    assert folder == ROOT / "dashboards" / "grafana" / "json"
    uids = {json.loads(p.read_text())["uid"] for p in folder.glob("*.json")}
    assert uids == DASHBOARD_UIDS


def test_kibana_import_posts_the_saved_objects_with_kbn_xsrf() -> None:
    """The one-shot import posts the mounted NDJSON to Kibana's import API with kbn-xsrf."""
    service = _services()["kibana-import"]
    command = _command_text(service)
    assert "/api/saved_objects/_import?overwrite=true" in command
    assert "kbn-xsrf: true" in command
    (upload,) = re.findall(r"file=@([^\s)]+)", command)
    source = _host_path(service, PurePosixPath(upload))
    assert source == ROOT / "dashboards" / "kibana" / "modelwatch.ndjson"
    assert service["depends_on"]["kibana"]["condition"] == "service_healthy"


CURL_OPTIONS_AFTER_7_68 = ("--fail-with-body", "--json", "--retry-all-errors", "--url-query")
"""curl options newer than curl 7.68, the one in the Ubuntu 20.04 based Elastic 8.17 images."""


def test_elastic_images_use_only_curl_options_their_curl_has() -> None:
    """Commands and health checks run in the Elastic 8.17 images avoid curl options after 7.68."""
    problems = []
    for name, service in _services().items():
        if not re.match(r"docker\.elastic\.co/.+:8\.17\.", service.get("image", "")):
            continue
        test = service.get("healthcheck", {}).get("test", [])
        text = _command_text(service) + "\n" + "\n".join(map(str, test))
        assert "curl" in text, name
        problems += [f"{name}: {o}" for o in CURL_OPTIONS_AFTER_7_68 if o in text]
    assert problems == []


def test_dependencies_wait_for_health_or_completion() -> None:
    """Every depends_on condition is one the target can meet; services have health checks."""
    services = _services()
    problems = []
    for name, service in services.items():
        if name not in ONE_SHOT and "profiles" not in service and "healthcheck" not in service:
            problems.append(f"{name}: long-running without a healthcheck")
        for target, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name} waits for {target}'s health, which is never checked")
            if condition == "service_completed_successfully" and target not in ONE_SHOT:
                problems.append(f"{name} waits for {target} to exit, which it never does")
    problems += [
        f"{n}: a one-shot job must not restart"
        for n in sorted(ONE_SHOT)
        if services[n].get("restart") != "no"
    ]
    assert problems == []


def test_one_shot_setup_runs_before_the_sidecar_ships() -> None:
    """`python -m sidecar setup` installs the templates before the sidecar starts shipping."""
    services = _services()
    setup = services["es-setup"]
    assert setup["build"] == services["sidecar"]["build"]
    assert setup["command"][0] == "setup"
    dockerfile = ROOT / setup["build"]["context"] / setup["build"]["dockerfile"]
    assert 'ENTRYPOINT ["python", "-m", "sidecar"]' in dockerfile.read_text()
    assert services["sidecar"]["depends_on"]["es-setup"]["condition"] == (
        "service_completed_successfully"
    )
