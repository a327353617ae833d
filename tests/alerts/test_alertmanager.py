"""alerts/alertmanager.yaml: valid, routed by severity, free of inline secrets.

The checks use the real ``amtool`` for the configuration and the routing tree. Inhibition and
grouping, which only a running Alertmanager evaluates, are pinned in
``test_alertmanager_live.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts._alertmanager import CONFIG, load_config
from tests.support.tools import run_tool

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
    templates = list(_template_strings(load_config()["receivers"]))
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
    assert set(_keys(load_config())) & _SECRET_KEYS == set()


def test_watchdog_never_sends_resolved() -> None:
    """A resolved Watchdog (Prometheus gone) must not reach the dead man's switch as a heartbeat."""
    receivers = {r["name"]: r for r in load_config()["receivers"]}
    configs = receivers["watchdog"]["webhook_configs"]
    assert configs
    assert all(c.get("send_resolved") is False for c in configs)


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def test_pages_repeat_more_often_than_chat() -> None:
    """An unresolved page is re-sent more often than an unresolved chat warning."""
    routes = {r["receiver"]: r for r in load_config()["route"]["routes"]}
    assert _seconds(routes["pager"]["repeat_interval"]) < _seconds(
        routes["chat"]["repeat_interval"]
    )
