"""Runbooks (alerts/runbooks/): one page per alert of alerts/rules/*.yaml.

Each page is reachable from its alert's ``runbook_url``, has the sections on-call relies on, and
its PromQL parses and queries series that exist (documented metrics and recording rules).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from alerts.config import DEFAULT

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "rules"
RUNBOOKS = ROOT / "alerts" / "runbooks"
INDEX = RUNBOOKS / "README.md"
SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Silencing / false positives")
METRIC_DOCS = ("docs/metrics.md", "docs/serving.md", "docs/client.md")
# Series from elsewhere that the runbooks may query: Prometheus itself (synthetic and
# self-monitoring series), cAdvisor and the DCGM exporter (the scrape contract of the deployment).
EXTERNAL_METRICS = {
    "up",
    "ALERTS",
    "prometheus_rule_evaluation_failures_total",
    "prometheus_notifications_errors_total",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "DCGM_FI_DEV_GPU_UTIL",
}
# Fences may be indented (inside a list item); an indented block must not escape the checks.
_PROMQL_BLOCK = re.compile(r"^[ \t]*```promql\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _alerting_rules() -> list[dict[str, Any]]:
    files = sorted(RULES.glob("*.yaml"))
    assert files, f"no rule files in {RULES}"
    rules = [
        rule
        for path in files
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert rules, "the rule files define no alerts"
    return rules


def _alert_names() -> set[str]:
    return {rule["alert"] for rule in _alerting_rules()}


def _runbooks() -> dict[str, Path]:
    return {path.stem: path for path in sorted(RUNBOOKS.glob("*.md")) if path != INDEX}


def _promql_blocks(text: str) -> list[str]:
    return [block.strip() for block in _PROMQL_BLOCK.findall(text)]


def test_every_alert_has_a_runbook() -> None:
    """Every alertname of the rule files has alerts/runbooks/<alertname>.md."""
    missing = sorted(_alert_names() - set(_runbooks()))
    assert missing == []


def test_no_runbook_without_an_alert() -> None:
    """No runbook describes an alert the rule files do not define (a renamed or removed one)."""
    orphans = sorted(set(_runbooks()) - _alert_names())
    assert orphans == []


def test_runbook_urls_point_at_their_page() -> None:
    """Every alert's runbook_url is the configured base URL followed by /<alertname>.md."""
    assert DEFAULT.runbook_base_url.endswith("/alerts/runbooks")
    wrong = {
        rule["alert"]: rule.get("annotations", {}).get("runbook_url")
        for rule in _alerting_rules()
        if rule.get("annotations", {}).get("runbook_url")
        != f"{DEFAULT.runbook_base_url}/{rule['alert']}.md"
    }
    assert wrong == {}


@pytest.mark.parametrize("name", sorted(_runbooks()))
def test_runbook_has_the_required_sections(name: str) -> None:
    """A runbook is titled with its alertname and has the on-call sections in a fixed order."""
    text = _runbooks()[name].read_text()
    assert text.startswith(f"# {name}\n")
    headings = re.findall(r"^## (.+?)\s*$", text, re.MULTILINE)
    in_order = [heading for heading in headings if heading in SECTIONS]
    assert in_order == list(SECTIONS), headings


@pytest.mark.parametrize("name", sorted(_runbooks()))
def test_runbook_promql_parses(name: str) -> None:
    """Each ```promql block of a runbook is one expression that parses; every runbook has some."""
    blocks = _promql_blocks(_runbooks()[name].read_text())
    assert blocks, "a runbook needs concrete queries in its Diagnosis"
    for block in blocks:
        try:
            promql_parser.parse(block)
        except ValueError as exc:
            pytest.fail(f"{name}: does not parse: {exc}\n{block}")


def _known_metrics() -> set[str]:
    documented = {
        name.rstrip("_")
        for doc in METRIC_DOCS
        for name in re.findall(r"\bmodelwatch_[a-z0-9_]+", (ROOT / doc).read_text())
    }
    recorded = {
        rule["record"]
        for path in sorted(RULES.glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    return documented | recorded | EXTERNAL_METRICS


def _selected_metrics(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


def _is_known(name: str, known: set[str]) -> bool:
    if name in known or name.startswith("process_"):
        return True
    return any(name.endswith(s) and name.removesuffix(s) in known for s in _HISTOGRAM_SUFFIXES)


@pytest.mark.parametrize("name", sorted(_runbooks()))
def test_runbook_promql_queries_existing_series(name: str) -> None:
    """Runbook queries only select documented metrics, recording rules and the scraped exporters."""
    known = _known_metrics()
    selected = {
        metric
        for block in _promql_blocks(_runbooks()[name].read_text())
        for metric in _selected_metrics(block)
    }
    assert sorted(m for m in selected if not _is_known(m, known)) == []


def test_index_lists_every_alert_with_its_severities() -> None:
    """The runbook index has one row per alert: its severities and a link to its page."""
    severities: dict[str, set[str]] = {}
    for rule in _alerting_rules():
        severities.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    rows = {}
    for line in INDEX.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`?(\w+)`?", cells[0]) if line.startswith("|") else None
        if match and match.group(1) in severities:
            rows[match.group(1)] = cells
    assert sorted(rows) == sorted(severities)
    for alert, cells in rows.items():
        assert set(re.findall(r"[a-z]+", cells[1])) == severities[alert], alert
        assert cells[-1] == f"[{alert}.md]({alert}.md)", alert
