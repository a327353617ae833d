"""alerts/alertmanager.yaml in a real Alertmanager: inhibited and grouped as documented.

Alertmanager 0.25 runs with the repository's route tree and inhibit rules, every receiver
replaced by a webhook to a ``WebhookReceiver`` in this module; alerts are fed over its v2 API.
Only a running Alertmanager evaluates inhibition and grouping.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from serving._alerting import Grouping, local_alertmanager_config
from serving._demo_processes import free_port
from tests.alerts._alertmanager import CONFIG, get
from tests.support.alerting_stack import WebhookReceiver, poll
from tests.support.tools import require_tool

TIMEOUT = 30.0
"""Seconds any Alertmanager condition may take before the test fails."""


def _arrived(payload: Mapping[str, Any] | None) -> bool:
    return payload is not None


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver().serving() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def alertmanager(
    tmp_path_factory: pytest.TempPathFactory, webhook: WebhookReceiver
) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager")
    directory = tmp_path_factory.mktemp("alertmanager")
    config = directory / "alertmanager.yaml"
    config.write_text(
        # Only the first notification's wait is cut (production waits up to a minute); the
        # route tree, receiver names and inhibit rules stay as configured.
        local_alertmanager_config(CONFIG.read_text(), webhook.url, Grouping(group_wait="1s"))
    )
    url = f"http://127.0.0.1:{free_port()}"
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

            def ready() -> bool:
                if process.poll() is not None:
                    pytest.fail(f"alertmanager exited:\n{log_path.read_text()}")
                return get(f"{url}/-/ready")[0] == 200

            poll(ready, bool, TIMEOUT, "alertmanager to be ready")
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
    status, body = get(f"{url}/api/v2/alerts")
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
    poll(
        lambda: _snapshot(alertmanager),
        lambda snapshot: _suppressed(snapshot, PROBES),
        TIMEOUT,
        "the probes to be inhibited",
    )
    _post(alertmanager, list(TARGETS))

    def all_known(snapshot: dict[str, dict[str, Any]]) -> bool:
        complete = len(snapshot) == len(SOURCES_AND_PROBES) + len(TARGETS)
        return complete and _suppressed(snapshot, ["drift_warning_f"])

    return poll(
        lambda: _snapshot(alertmanager),
        all_known,
        TIMEOUT,
        "every alert to be known and drift_warning_f inhibited",
    )


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
    settled: dict[str, dict[str, Any]], webhook: WebhookReceiver
) -> None:
    """The critical drift alert is paged as its own group keyed by alertname, namespace, model."""
    group = {"alertname": "ModelwatchFeatureDrift", "namespace": "demo", "model": "m"}
    payload = poll(
        lambda: webhook.find("pager", group), _arrived, TIMEOUT, "the pager notification"
    )
    assert payload["receiver"] == "pager"
    assert payload["status"] == "firing"
    assert [a["labels"] for a in payload["alerts"]] == [_labels("drift_critical_f")]


@pytest.mark.slow
def test_chat_receives_one_group_without_inhibited_alerts(
    settled: dict[str, dict[str, Any]], webhook: WebhookReceiver
) -> None:
    """The drifting features of one model arrive in one chat message, the inhibited one left out."""
    group = {"alertname": "ModelwatchFeatureDrift", "namespace": "demo", "model": "m"}
    payload = poll(lambda: webhook.find("chat", group), _arrived, TIMEOUT, "the chat notification")
    assert payload["receiver"] == "chat"
    assert sorted(a["labels"]["feature"] for a in payload["alerts"]) == ["g", "k"]
