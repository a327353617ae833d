"""Grafana dashboards: regenerable, valid for the SDK's schema, and every query well formed."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_client import CollectorRegistry

from alerts.config import DEFAULT
from alerts.generate import render_rules
from dashboards.grafana import generate, queries
from dashboards.grafana._build import JSON_DIR, render
from serving.metrics import ServingMetrics
from sidecar import _client_metrics
from sidecar.metric_names import METRICS

GRAFANA = Path(__file__).parents[2] / "dashboards" / "grafana"
PROVISIONING = GRAFANA / "provisioning"
UIDS = {"modelwatch-serving", "modelwatch-drift", "modelwatch-health"}
RATE_FUNCTIONS = {"rate", "irate", "increase"}
# Series from exporters other than modelwatch's, named in the deployment spec.
EXTERNAL_METRICS = {
    "up",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "DCGM_FI_DEV_GPU_UTIL",
}
# An interval no query would spell by hand, to recognise $__rate_interval after substitution.
MARKER_INTERVAL = "7m13s"


def _committed() -> dict[str, dict[str, Any]]:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(JSON_DIR.glob("*.json"))
    }


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every non-row panel, also those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _all_panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for uid, dashboard in _committed().items():
        for panel in _panels(dashboard):
            yield uid, panel


def _walk(expr: str) -> list[Any]:
    nodes: list[Any] = []
    promql_parser.walk(promql_parser.parse(expr), pre_visit=nodes.append)
    return nodes


def _selectors(expr: str) -> list[Any]:
    return [n for n in _walk(expr) if isinstance(n, promql_parser.VectorSelector)]


def _parsed(expr: str) -> str:
    return queries.substitute_variables(expr, rate_interval=MARKER_INTERVAL)


def _histogram_names(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}


def _known_metrics() -> set[str]:
    known = set(EXTERNAL_METRICS)
    for spec in METRICS:
        known |= _histogram_names(spec.name) if spec.kind == "histogram" else {spec.name}
    registry = CollectorRegistry()
    ServingMetrics(registry, model="m", version="v", process=False)
    for family in registry.collect():
        if family.type == "histogram":
            known |= _histogram_names(family.name)
        elif family.type == "counter":
            known.add(f"{family.name}_total")
        else:
            known.add(family.name)
    logger = _client_metrics
    known |= {f"{logger.EVENTS}_total", logger.BUFFER, logger.CAPACITY}
    known.add(f"{logger.SAMPLED_OUT}_total")
    for text in render_rules(DEFAULT).values():
        for group in yaml.safe_load(text)["groups"]:
            known |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return known


def test_committed_json_is_what_the_generator_writes() -> None:
    """The committed json/*.json files equal the generator's output (`--check` passes)."""
    out = io.StringIO()
    assert generate.main(["--check"], out=out) == 0, out.getvalue()
    assert {f"{uid}.json" for uid in UIDS} == set(render())


def test_check_fails_with_a_diff_on_an_edited_file(tmp_path: Path) -> None:
    """`--check` exits 1 and prints a diff naming the file when a committed file was edited."""
    assert generate.main(["--out", str(tmp_path)]) == 0
    edited = tmp_path / "modelwatch-drift.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace('"Drift"', '"Drfit"'))
    out = io.StringIO()
    assert generate.main(["--check", "--out", str(tmp_path)], out=out) == 1
    assert "modelwatch-drift.json" in out.getvalue()
    assert '-  "title": "Drfit"' in out.getvalue()


def test_check_fails_on_a_file_no_longer_generated(tmp_path: Path) -> None:
    """`--check` exits 1 when the JSON folder holds a dashboard the generator no longer makes."""
    assert generate.main(["--out", str(tmp_path)]) == 0
    (tmp_path / "modelwatch-old.json").write_text("{}\n")
    out = io.StringIO()
    assert generate.main(["--check", "--out", str(tmp_path)], out=out) == 1
    assert "modelwatch-old.json" in out.getvalue()


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_dashboard_round_trips_through_the_sdk_model(uid: str) -> None:
    """Decoding the JSON with the SDK's typed Dashboard model and encoding it again is lossless."""
    register_default_plugins()
    data = _committed()[uid]
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert again == data


def test_schema_version_is_the_sdks() -> None:
    """Every dashboard declares the schemaVersion of the SDK's (Grafana 11.6) dashboard model."""
    expected = Dashboard().schema_version
    assert {uid: d["schemaVersion"] for uid, d in _committed().items()} == dict.fromkeys(
        UIDS, expected
    )


def test_uids_are_stable_unique_and_name_the_files() -> None:
    """The three dashboards have the spec's uids, each once, in <uid>.json, tagged modelwatch."""
    committed = _committed()
    assert set(committed) == UIDS
    for uid, dashboard in committed.items():
        assert dashboard["uid"] == uid
        assert "modelwatch" in dashboard["tags"]
        assert dashboard["refresh"]
        assert dashboard["time"]["to"] == "now"


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_panel_ids_are_unique(uid: str) -> None:
    """No two panels (rows included) of a dashboard share an id."""
    dashboard = _committed()[uid]
    ids = [p["id"] for p in dashboard["panels"]] + [
        p["id"] for row in dashboard["panels"] for p in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_panels_fit_the_grid_without_overlapping(uid: str) -> None:
    """Every panel lies within the 24 columns and covers no cell another panel covers."""
    taken: dict[tuple[int, int], str] = {}
    for panel in _committed()[uid]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["y"] >= 0, panel["title"]
        assert pos["w"] > 0, panel["title"]
        assert pos["h"] > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_panel_has_a_unit_and_a_description() -> None:
    """Each panel sets fieldConfig.defaults.unit and a non-trivial description."""
    for uid, panel in _all_panels():
        assert panel["fieldConfig"]["defaults"].get("unit"), (uid, panel["title"])
        assert len(panel.get("description", "")) > 20, (uid, panel["title"])


def test_every_target_uses_the_datasource_variable() -> None:
    """Panels and their targets query the `${datasource}` variable, never a fixed data source."""
    for uid, panel in _all_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, uid
        assert panel["targets"], (uid, panel["title"])
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert target["refId"], (uid, panel["title"])


def test_json_targets_are_the_queries_module() -> None:
    """The JSON's panels hold exactly the queries of `queries.py`, under the same titles."""
    from_json = sorted(
        (uid, panel["title"], target["expr"])
        for uid, panel in _all_panels()
        for target in panel["targets"]
    )
    assert from_json == sorted(queries.all_queries())
    titles = [(p.uid, p.title) for p in queries.panels()]
    assert len(titles) == len(set(titles))


def test_variables_are_chained_multi_value_and_include_all() -> None:
    """Each dashboard has `datasource` (prometheus) and chained `namespace`, `model`, `version`."""
    for uid, dashboard in _committed().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert list(variables) == ["datasource", "namespace", "model", "version"], uid
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("namespace", "model", "version"):
            variable = variables[name]
            assert variable["type"] == "query"
            assert variable["datasource"]["uid"] == "${datasource}"
            assert variable["multi"] is True
            assert variable["includeAll"] is True
            assert variable["allValue"] == ".*"
            assert variable["query"].startswith("label_values(")
        assert '$namespace"' in variables["model"]["query"]
        assert '$namespace"' in variables["version"]["query"]
        assert '$model"' in variables["version"]["query"]


@pytest.mark.parametrize(("uid", "title", "expr"), queries.all_queries())
def test_query_parses_after_substitution(uid: str, title: str, expr: str) -> None:
    """The query is valid PromQL once Grafana's variables are replaced, and none is left over."""
    substituted = queries.substitute_variables(expr)
    assert "$" not in substituted
    promql_parser.parse(substituted)


def test_every_range_function_uses_the_rate_interval() -> None:
    """Each rate(), irate() and increase() ranges over $__rate_interval, and no range is fixed."""
    marker = promql_parser.parse_duration(MARKER_INTERVAL)
    calls = 0
    for uid, title, expr in queries.all_queries():
        assert re.findall(r"\[([^\]]*)\]", expr) == ["$__rate_interval"] * expr.count("["), title
        for node in _walk(_parsed(expr)):
            if isinstance(node, promql_parser.Call) and node.func.name in RATE_FUNCTIONS:
                calls += 1
                assert node.args[0].range == marker, (uid, title)
    assert calls > 20


def test_every_selector_filters_on_the_dashboard_variables() -> None:
    """Every series selector filters on $namespace, and on $model and $version where it has them."""
    for _, title, expr in queries.all_queries():
        for selector in _selectors(queries.substitute_variables(expr, values=_SENTINELS)):
            matchers = {m.name: (m.op, m.value) for m in selector.matchers.matchers}
            assert matchers.get("namespace") == (promql_parser.MatchOp.Re, "NS"), (title, expr)
            if selector.name not in EXTERNAL_METRICS and _has_model_labels(selector.name):
                assert matchers.get("model") == (promql_parser.MatchOp.Re, "MODEL"), title
                assert matchers.get("version") == (promql_parser.MatchOp.Re, "VER"), title


_SENTINELS = {"namespace": "NS", "model": "MODEL", "version": "VER"}
_NO_MODEL_LABELS = {spec.name for spec in METRICS if "model" not in spec.labels}


def _has_model_labels(name: str) -> bool:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name not in _NO_MODEL_LABELS and base not in _NO_MODEL_LABELS


def test_every_metric_name_exists() -> None:
    """Each metric read is exported by modelwatch, recorded by a rule, or a named exporter's."""
    known = _known_metrics()
    unknown = {
        (title, selector.name)
        for _, title, expr in queries.all_queries()
        for selector in _selectors(_parsed(expr))
        if selector.name not in known
    }
    assert not unknown


def test_queries_needing_outside_sources_are_marked() -> None:
    """cAdvisor, DCGM and feedback-only series are marked, so a bare stack can skip just them."""
    required = {expr for _, _, expr in queries.required_queries()}
    for _, title, expr in queries.all_queries():
        outside = re.search(r"container_|DCGM_|modelwatch_model_", expr) is not None
        assert (expr not in required) == outside, title
    everything: frozenset[queries.Source] = frozenset({"cadvisor", "dcgm", "feedback"})
    assert queries.required_queries(everything) == queries.all_queries()


def test_substitute_variables_replaces_grafana_variables() -> None:
    """Built-in intervals and the dashboard variables are replaced; braces and formats too."""
    expr = 'rate(x{a=~"$namespace", b=~"${model}", c=~"${version:regex}"}[$__rate_interval])'
    assert queries.substitute_variables(expr, rate_interval="2m") == (
        'rate(x{a=~".*", b=~".*", c=~".*"}[2m])'
    )
    assert queries.substitute_variables("x[$__interval] $__range", interval="30s") == ("x[30s] 1h")


def test_substitute_variables_names_an_unknown_variable() -> None:
    """A variable the dashboards do not define raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"\$pod"):
        queries.substitute_variables('up{pod=~"$pod"}')


def test_burn_rate_queries_divide_by_the_alerts_budgets() -> None:
    """The SLO panels read every burn-rate recording rule window and divide by 1 - SLO target."""
    burn = [e for u, t, e in queries.all_queries() if "burn rate" in t]
    windows = {b.long_window.label for b in DEFAULT.burn_rates} | {
        b.short_window.label for b in DEFAULT.burn_rates
    }
    for sli, budget in (("latency_slow", "0.01"), ("errors", "0.001")):
        for window in windows:
            rule = f"namespace_model_version:modelwatch_prediction_{sli}:ratio_rate{window}"
            assert any(e.startswith(rule + "{") and e.endswith(f" / {budget}") for e in burn)


def test_datasource_provisioning_points_at_prometheus() -> None:
    """The provisioned Prometheus data source has uid `prometheus` and the compose service URL."""
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = config["datasources"]
    assert source["uid"] == "prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"


def test_dashboard_provisioning_reads_the_mounted_folder() -> None:
    """The dashboard provider loads files from /var/lib/grafana/dashboards/modelwatch."""
    config = yaml.safe_load((PROVISIONING / "dashboards" / "modelwatch.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/modelwatch"
