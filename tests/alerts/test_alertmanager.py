"""alerts/alertmanager.yaml: valid, routed by severity, grouped and inhibited as documented.

The checks use the real tools: ``amtool`` for the configuration and the routing tree, and a real
Alertmanager (fed alerts over its v2 API, notifying a webhook server in this module) for
inhibition and grouping, which only a running Alertmanager evaluates.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.support.tools import require_tool, run_tool

CONFIG = Path(__file__).resolve().parents[2] / "alerts" / "alertmanager.yaml"
_T = TypeVar("_T")


def _load_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


def with_webhook_receivers(config: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A copy of ``config`` whose receivers all post to ``base_url/<receiver name>``.

    Receiver names, the route tree and the inhibit rules are kept as they are, so the copy routes
    and inhibits exactly like the original while its notifications can be observed.
    """
    result = copy.deepcopy(config)
    result["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [{"url": f"{base_url}/{receiver['name']}", "send_resolved": True}],
        }
        for receiver in config["receivers"]
    ]
    return result


def _with_short_group_wait(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose routes wait 1 s before a group's first notification.

    Only the timing changes (not what these tests pin): a group's first notification then comes
    within seconds instead of after the production wait of up to a minute.
    """
    result = copy.deepcopy(config)
    routes = [result["route"]]
    while routes:
        route = routes.pop()
        if "group_wait" in route:
            route["group_wait"] = "1s"
        routes.extend(route.get("routes", []))
    return result


def _poll(probe: Callable[[], _T | None], what: str, timeout: float = 30.0) -> _T:
    """Call ``probe`` until it returns something other than None; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# amtool: configuration and routing tree


def test_amtool_check_config_passes() -> None:
    """The configuration passes amtool (secret files need not exist: they are read when sending)."""
    result = run_tool("amtool", "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"severity": "critical", "alertname": "ModelwatchFeatureDrift"}, "pager"),
        ({"severity": "critical", "alertname": "ModelwatchShippingDroppingDocuments"}, "pager"),
        ({"severity": "warning", "alertname": "ModelwatchFeatureDrift"}, "chat"),
        ({"severity": "info", "alertname": "ModelwatchUnknownFeatures"}, "null"),
        ({"severity": "none", "alertname": "Watchdog"}, "watchdog"),
        ({"severity": "critical", "alertname": "Watchdog"}, "watchdog"),
        ({"severity": "page", "alertname": "ModelwatchFeatureDrift"}, "chat"),
        ({"alertname": "ModelwatchFeatureDrift"}, "chat"),
    ],
    ids=["critical", "critical-health", "warning", "info", "watchdog", "watchdog-first",
         "unknown-severity", "no-severity"],
)  # fmt: skip
def test_routes_by_severity(labels: dict[str, str], receiver: str) -> None:
    """Each severity reaches its receiver, Watchdog always the dead man's switch, others chat."""
    full = {"namespace": "demo", "model": "m", "version": "1", **labels}
    result = run_tool(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *(f"{name}={value}" for name, value in full.items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def _template_strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _template_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _template_strings(value)
    elif isinstance(node, str) and "{{" in node:
        yield node


def test_receiver_templates_render(tmp_path: Path) -> None:
    """Every templated receiver field renders (template errors otherwise only show when paging)."""
    empty = tmp_path / "empty.tmpl"
    empty.write_text("")
    templates = list(_template_strings(_load_config()["receivers"]))
    assert templates, "the receivers use no templates at all"
    for text in templates:
        result = run_tool(
            "amtool", "template", "render", f"--template.glob={empty}", f"--template.text={text}"
        )
        assert result.returncode == 0, f"{text!r}: {result.stderr}"


_SECRET_KEYS = {
    "routing_key", "service_key", "api_url", "slack_api_url", "api_key", "auth_password",
    "password", "credentials", "bearer_token", "bot_token", "token", "client_secret",
}  # fmt: skip


def _keys(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_no_inline_secrets() -> None:
    """Credentials are only ever referenced through ``*_file`` fields, never written inline."""
    assert set(_keys(_load_config())) & _SECRET_KEYS == set()


def test_watchdog_never_sends_resolved() -> None:
    """A resolved Watchdog (Prometheus gone) must not reach the dead man's switch as a heartbeat."""
    receivers = {r["name"]: r for r in _load_config()["receivers"]}
    configs = receivers["watchdog"]["webhook_configs"]
    assert configs
    assert all(c.get("send_resolved") is False for c in configs)


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def test_pages_repeat_more_often_than_chat() -> None:
    """An unresolved page is re-sent more often than an unresolved chat warning."""
    routes = {r["receiver"]: r for r in _load_config()["route"]["routes"]}
    assert _seconds(routes["pager"]["repeat_interval"]) < _seconds(
        routes["chat"]["repeat_interval"]
    )


# ---------------------------------------------------------------------------------------------
# A real Alertmanager: inhibition and grouping


class _Recorder(ThreadingHTTPServer):
    """Webhook server remembering each notification as (receiver path, payload)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.lock = threading.Lock()
        self.notifications: list[tuple[str, dict[str, Any]]] = []

    def find(self, receiver: str, group: dict[str, str]) -> dict[str, Any] | None:
        with self.lock:
            for path, payload in self.notifications:
                if path == receiver and payload["groupLabels"] == group:
                    return payload
        return None


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.notifications.append((self.path.strip("/"), payload))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local test URL)
            return response.status, response.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


@pytest.fixture(scope="module")
def webhook() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, webhook: _Recorder) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager")
    directory = tmp_path_factory.mktemp("alertmanager")
    config = directory / "alertmanager.yaml"
    hook = f"http://127.0.0.1:{webhook.server_address[1]}"
    config.write_text(
        yaml.safe_dump(_with_short_group_wait(with_webhook_receivers(_load_config(), hook)))
    )
    url = f"http://127.0.0.1:{_free_port()}"
    log_path = directory / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
                "--cluster.listen-address=",  # empty: no clustering, no gossip port
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool | None:
                if process.poll() is not None:
                    pytest.fail(f"alertmanager exited:\n{log_path.read_text()}")
                return True if _get(f"{url}/-/ready")[0] == 200 else None

            _poll(ready, "alertmanager to be ready")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _drift(severity: str, feature: str) -> dict[str, str]:
    return {"alertname": "ModelwatchFeatureDrift", "severity": severity, "model": "m",
            "version": "1", "feature": feature}  # fmt: skip


def _ks(pod: str, model: str, feature: str) -> dict[str, str]:
    return {"alertname": "ModelwatchFeatureDriftKS", "severity": "warning", "pod": pod,
            "model": model, "version": "1", "feature": feature}  # fmt: skip


def _latency(severity: str, long_window: str, short_window: str) -> dict[str, str]:
    return {"alertname": "ModelwatchLatencyBudgetBurn", "severity": severity, "model": "m3",
            "version": "1", "long_window": long_window, "short_window": short_window}  # fmt: skip


# Sent first: the inhibiting alerts, and one alert each of them inhibits ("probes"). Once every
# probe is suppressed, Alertmanager's inhibitor knows every source, so what is not suppressed
# after that is not inhibited (rather than not inhibited yet).
SOURCES_AND_PROBES = {
    "drift_critical_f": _drift("critical", "f"),
    "sidecar_down_p": {"alertname": "ModelwatchSidecarDown", "severity": "warning", "pod": "p",
                       "job": "modelwatch-sidecar"},
    "latency_fast_burn": _latency("critical", "1h", "5m"),
    "ks_q_f": _ks("q", "m", "f"),
    "ks_p": _ks("p", "m2", "h"),
    "latency_slow_burn": _latency("warning", "3d", "6h"),
}  # fmt: skip
TARGETS = {
    "drift_warning_f": _drift("warning", "f"),
    "drift_warning_g": _drift("warning", "g"),
    "drift_warning_k": _drift("warning", "k"),
    "ks_q": _ks("q", "m2", "h"),
    "accuracy_m3": {"alertname": "ModelwatchModelAccuracyLow", "severity": "warning",
                    "model": "m3", "version": "1"},
}  # fmt: skip
PROBES = ("ks_q_f", "ks_p", "latency_slow_burn")
SUPPRESSED_BY = {
    "drift_warning_f": "drift_critical_f",
    "ks_q_f": "drift_critical_f",
    "ks_p": "sidecar_down_p",
    "latency_slow_burn": "latency_fast_burn",
}


def _labels(key: str) -> dict[str, str]:
    return {"namespace": "demo", **(SOURCES_AND_PROBES | TARGETS)[key]}


def _post(url: str, keys: list[str]) -> None:
    now = datetime.now(UTC)
    body = [
        {
            "labels": _labels(key),
            "annotations": {"summary": key},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
        }
        for key in keys
    ]
    request = urllib.request.Request(  # noqa: S310 (local test URL)
        f"{url}/api/v2/alerts",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.status == 200


def _snapshot(url: str) -> dict[str, dict[str, Any]]:
    """Alertmanager's view of the posted alerts, by key; keys not known yet are absent."""
    status, body = _get(f"{url}/api/v2/alerts")
    if status != 200:
        return {}
    by_labels = {json.dumps(a["labels"], sort_keys=True): a for a in json.loads(body)}
    found = {}
    for key in SOURCES_AND_PROBES | TARGETS:
        alert = by_labels.get(json.dumps(_labels(key), sort_keys=True))
        if alert is not None:
            found[key] = alert
    return found


def _suppressed(snapshot: dict[str, dict[str, Any]], keys: list[str] | tuple[str, ...]) -> bool:
    return all(key in snapshot and snapshot[key]["status"]["state"] == "suppressed" for key in keys)


@pytest.fixture(scope="module")
def settled(alertmanager: str) -> dict[str, dict[str, Any]]:
    """Post the alerts in two rounds and return Alertmanager's view once inhibition has settled."""
    _post(alertmanager, list(SOURCES_AND_PROBES))
    _poll(
        lambda: True if _suppressed(_snapshot(alertmanager), PROBES) else None,
        "the probes to be inhibited",
    )
    _post(alertmanager, list(TARGETS))

    def all_known() -> dict[str, dict[str, Any]] | None:
        snapshot = _snapshot(alertmanager)
        complete = len(snapshot) == len(SOURCES_AND_PROBES) + len(TARGETS)
        return snapshot if complete and _suppressed(snapshot, ["drift_warning_f"]) else None

    return _poll(all_known, "every alert to be known and drift_warning_f inhibited")


@pytest.mark.slow
@pytest.mark.parametrize(("target", "source"), sorted(SUPPRESSED_BY.items()))
def test_alert_is_inhibited(settled: dict[str, dict[str, Any]], target: str, source: str) -> None:
    """Each listed alert is suppressed by exactly its expected source alert and nothing else."""
    status = settled[target]["status"]
    assert status["state"] == "suppressed"
    assert status["inhibitedBy"] == [settled[source]["fingerprint"]]
    assert status["silencedBy"] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    ["drift_critical_f", "drift_warning_g", "drift_warning_k", "ks_q", "accuracy_m3",
     "sidecar_down_p", "latency_fast_burn"],
)  # fmt: skip
def test_alert_is_not_inhibited(settled: dict[str, dict[str, Any]], key: str) -> None:
    """Other features, other pods and other alerts of the same model version stay active."""
    status = settled[key]["status"]
    assert status["state"] == "active", status
    assert status["inhibitedBy"] == []


@pytest.mark.slow
def test_pager_receives_the_critical_group(
    settled: dict[str, dict[str, Any]], webhook: _Recorder
) -> None:
    """The critical drift alert is paged as its own group keyed by alertname, namespace, model."""
    group = {"alertname": "ModelwatchFeatureDrift", "namespace": "demo", "model": "m"}
    payload = _poll(lambda: webhook.find("pager", group), "the pager notification")
    assert payload["receiver"] == "pager"
    assert payload["status"] == "firing"
    assert [a["labels"] for a in payload["alerts"]] == [_labels("drift_critical_f")]


@pytest.mark.slow
def test_chat_receives_one_group_without_inhibited_alerts(
    settled: dict[str, dict[str, Any]], webhook: _Recorder
) -> None:
    """The drifting features of one model arrive in one chat message, the inhibited one left out."""
    group = {"alertname": "ModelwatchFeatureDrift", "namespace": "demo", "model": "m"}
    payload = _poll(lambda: webhook.find("chat", group), "the chat notification")
    assert payload["receiver"] == "chat"
    assert sorted(a["labels"]["feature"] for a in payload["alerts"]) == ["g", "k"]
