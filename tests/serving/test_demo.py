"""The demo: its live view's arithmetic and rendering, its alerting set-up, and a short real run.

The real run starts Prometheus and Alertmanager too, so it needs both binaries (it fails, naming
them, when they are missing) and checks that all four children are gone afterwards.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from serving import demo, train
from serving._alerting import Grouping, ScrapeTarget, local_alertmanager_config, prometheus_config
from serving._demo_view import (
    AlertView,
    LiveView,
    Observer,
    histogram_quantile,
    parse_alertmanager,
    parse_fired,
    parse_server,
    render_block,
    render_line,
)
from tests.support.tools import require_tool, run_tool

ALERTMANAGER_YAML = Path(__file__).resolve().parents[2] / "alerts" / "alertmanager.yaml"

EXPOSITION = """\
# TYPE modelwatch_serving_request_duration_seconds histogram
modelwatch_serving_request_duration_seconds_bucket{route="/{m}:predict",code="200",le="0.01"} 10.0
modelwatch_serving_request_duration_seconds_bucket{route="/{m}:predict",code="200",le="0.02"} 30.0
modelwatch_serving_request_duration_seconds_bucket{route="/{m}:predict",code="200",le="+Inf"} 40.0
modelwatch_serving_request_duration_seconds_count{route="/{m}:predict",code="200"} 40.0
modelwatch_serving_request_duration_seconds_sum{route="/{m}:predict",code="200"} 0.5
modelwatch_serving_request_duration_seconds_bucket{route="/metrics",code="200",le="0.01"} 7.0
modelwatch_serving_request_duration_seconds_bucket{route="/metrics",code="200",le="0.02"} 7.0
modelwatch_serving_request_duration_seconds_bucket{route="/metrics",code="200",le="+Inf"} 7.0
modelwatch_serving_request_duration_seconds_count{route="/metrics",code="200"} 7.0
modelwatch_serving_request_duration_seconds_sum{route="/metrics",code="200"} 0.01
# TYPE modelwatch_logger_events counter
modelwatch_logger_events_total{outcome="sent"} 35.0
modelwatch_logger_events_total{outcome="dropped"} 2.0
modelwatch_logger_events_total{outcome="rejected"} 0.0
# TYPE modelwatch_logger_buffer_events gauge
modelwatch_logger_buffer_events 3.0
"""

DRIFT = {
    "models": [
        {
            "window_events": 40,
            "features": [
                {"feature": "a", "psi": 0.5, "test": "ks", "statistic": 0.3, "drifted": True},
                {"feature": "b", "psi": 0.01, "test": "ks", "statistic": 0.05, "drifted": False},
                {"feature": "c", "psi": 0.9, "test": "chi2", "statistic": 88.0, "drifted": True},
                {"feature": "d", "psi": None, "test": "ks", "statistic": None, "drifted": False},
            ],
            "prediction": {"psi": 0.02},
        }
    ]
}


def test_scrape_keeps_only_the_predict_route_and_the_logger() -> None:
    """Parsing a scrape counts predict requests only and reads the logger's outcomes and buffer."""
    scrape = parse_server(EXPOSITION, at=1.0)
    assert scrape.requests == 40
    assert scrape.buckets == ((0.01, 10.0), (0.02, 30.0), (math.inf, 40.0))
    assert scrape.logger == {"sent": 35.0, "dropped": 2.0, "rejected": 0.0}
    assert scrape.buffered == 3.0


def test_histogram_quantile_interpolates_within_buckets() -> None:
    """Quantiles of uniformly spread observations match numpy within a bucket's linear model."""
    rng = np.random.default_rng(5)
    values = rng.uniform(0.0, 1.0, 100_000)
    edges = np.linspace(0.1, 1.0, 10)
    buckets = [(float(e), float(np.sum(values <= e))) for e in edges] + [(math.inf, 1e5)]
    for q in (0.5, 0.95, 0.99):
        got = histogram_quantile(q, buckets)
        assert got == pytest.approx(float(np.quantile(values, q)), abs=0.01)


def test_histogram_quantile_edge_cases() -> None:
    """No observations give None; a quantile in the +Inf bucket reports its lower bound."""
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1


def test_observer_rates_and_top_features() -> None:
    """A tick holds the request rate between scrapes, KS only for numeric features, the flags."""
    observer = Observer()
    observer.tick("steady", 1.0, parse_server(EXPOSITION, at=1.0), DRIFT)
    later = EXPOSITION.replace("} 40.0", "} 60.0")
    tick = observer.tick("steady", 3.0, parse_server(later, at=3.0), DRIFT)
    assert tick.rate == pytest.approx(10.0)
    assert [f.name for f in tick.top_psi] == ["c", "a", "b"]
    assert [f.name for f in tick.top_ks] == ["a", "b"]
    assert tick.drifted == ("a", "c")
    assert tick.prediction_psi == 0.02
    assert tick.window_events == 40


def test_live_view_prints_a_line_per_tick_when_not_a_terminal() -> None:
    """Without a terminal, every tick appends one line and no escape sequence."""
    stream = io.StringIO()
    view = LiveView(stream, interactive=False)
    tick = Observer().tick("drift", 2.0, parse_server(EXPOSITION, at=2.0), DRIFT)
    view.show(tick)
    view.show(tick)
    lines = stream.getvalue().splitlines()
    assert lines == [render_line(tick)] * 2
    assert "\x1b" not in stream.getvalue()
    assert "drift YES a,c" in lines[0]
    assert "dropped 2" in lines[0]
    top_ks = tick.top_ks[0]
    assert f"top KS {top_ks.name} {top_ks.ks:.3f}" in lines[0]  # the top feature by each test
    assert f"top PSI {tick.top_psi[0].name} " in lines[0]


def test_live_view_redraws_in_place_on_a_terminal() -> None:
    """On a terminal the second tick moves the cursor back over the first block and clears it."""
    stream = io.StringIO()
    view = LiveView(stream, interactive=True)
    tick = Observer().tick("drift", 2.0, parse_server(EXPOSITION, at=2.0), DRIFT)
    view.show(tick)
    first = stream.getvalue()
    view.show(tick)
    block = first.count("\n")
    assert "\x1b" not in first
    assert stream.getvalue()[len(first) :].startswith(f"\x1b[{block}F\x1b[J")


def test_alertmanager_answer_becomes_sorted_alerts_without_the_watchdog() -> None:
    """Alertmanager's alerts are named by alertname, feature (else pod), severity; no Watchdog."""
    body = [
        {"labels": {"alertname": "Watchdog", "severity": "none"}},
        {"labels": {"alertname": "ModelwatchFeatureDrift", "feature": "b", "severity": "critical"}},
        {"labels": {"alertname": "ModelwatchSidecarDown", "pod": "p-0", "severity": "warning"}},
        {"labels": {"alertname": "ModelwatchFeatureDrift", "feature": "a", "severity": "warning"}},
    ]
    alerts = parse_alertmanager(body)
    assert [str(a) for a in alerts] == [
        "ModelwatchFeatureDrift(a, warning)",
        "ModelwatchFeatureDrift(b, critical)",
        "ModelwatchSidecarDown(p-0, warning)",
    ]
    assert parse_alertmanager({"error": "not a list"}) == ()


def test_fired_alerts_come_once_each_from_a_prometheus_answer() -> None:
    """A query answer over ALERTS gives each alert once, the Watchdog included."""
    series = [
        {"metric": {"alertname": "Watchdog", "alertstate": "firing", "severity": "none"}},
        {"metric": {"alertname": "ModelwatchNoPredictions", "pod": "d-0", "severity": "warning"}},
        {"metric": {"alertname": "Watchdog", "alertstate": "firing", "severity": "none"}},
    ]
    body = {"status": "success", "data": {"resultType": "vector", "result": series}}
    assert parse_fired(body) == [
        AlertView("ModelwatchNoPredictions", "d-0", "warning"),
        AlertView("Watchdog", "", "none"),
    ]


def test_views_show_firing_alerts_only_when_alerting_runs() -> None:
    """Ticks with alerts show them in the line and the block; ticks without alerting do not."""
    scrape = parse_server(EXPOSITION, at=2.0)
    alerts = tuple(AlertView("ModelwatchFeatureDrift", f"f{i}", "warning") for i in range(6))
    tick = Observer().tick("drift", 2.0, scrape, DRIFT, alerts=alerts)
    assert "alerts ModelwatchFeatureDrift(f0, warning), " in render_line(tick)
    assert render_line(tick).endswith("+2 more")
    assert render_block(tick)[-1].startswith("  alerts firing: ModelwatchFeatureDrift(f0")
    quiet = Observer().tick("drift", 2.0, scrape, DRIFT, alerts=())
    assert render_line(quiet).endswith("| alerts none")
    off = Observer().tick("drift", 2.0, scrape, DRIFT)
    assert "alerts" not in render_line(off)
    assert not any("alerts" in line for line in render_block(off))


def test_local_alertmanager_config_keeps_routing_and_inhibition() -> None:
    """The local copy keeps routes and inhibition and sends every receiver to the webhook."""
    source = ALERTMANAGER_YAML.read_text()
    grouping = Grouping("1s", "2s", "1h")
    local = yaml.safe_load(local_alertmanager_config(source, "http://127.0.0.1:9/hook", grouping))
    original = yaml.safe_load(source)
    assert local["inhibit_rules"] == original["inhibit_rules"]
    assert [r["name"] for r in local["receivers"]] == [r["name"] for r in original["receivers"]]
    for receiver in local["receivers"]:
        assert receiver["webhook_configs"] == [
            {"url": "http://127.0.0.1:9/hook", "send_resolved": True}
        ]
    routes = [local["route"], *local["route"]["routes"]]
    assert [r.get("matchers") for r in routes] == [
        r.get("matchers") for r in [original["route"], *original["route"]["routes"]]
    ]
    assert all(r.get("group_wait", "1s") == "1s" for r in routes)
    assert local["route"]["group_interval"] == "2s"
    silent = yaml.safe_load(local_alertmanager_config(source, None))
    assert all(set(r) == {"name"} for r in silent["receivers"])
    assert silent["route"] == original["route"]


def test_local_configurations_pass_the_real_checkers(tmp_path: Path) -> None:
    """The local Alertmanager copy passes amtool and the generated Prometheus config promtool."""
    am = tmp_path / "alertmanager.yml"
    am.write_text(local_alertmanager_config(ALERTMANAGER_YAML.read_text(), "http://127.0.0.1:9/"))
    checked = run_tool("amtool", "check-config", str(am))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text("groups: []\n")
    targets = [
        ScrapeTarget("modelwatch-sidecar", "127.0.0.1:9500", {"namespace": "d", "pod": "d-0"}),
        ScrapeTarget("modelwatch-sidecar", "127.0.0.1:9501", {"namespace": "d", "pod": "d-1"}),
        ScrapeTarget("kubernetes-cadvisor", "127.0.0.1:9600", honor_labels=True),
    ]
    config = prometheus_config(targets, [rules], "127.0.0.1:9093")
    assert [job["job_name"] for job in config["scrape_configs"]] == [
        "modelwatch-sidecar",
        "kubernetes-cadvisor",
    ]
    assert len(config["scrape_configs"][0]["static_configs"]) == 2
    prom = tmp_path / "prometheus.yml"
    prom.write_text(yaml.safe_dump(config))
    checked = run_tool("promtool", "check", "config", str(prom))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_short_demo_catches_the_drift_and_leaves_no_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short real demo run flags every shifted feature, exits 0, leaves no process or socket."""
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    model_dir = train.build(tmp_path / "model").directory
    code = demo.main(
        [
            "--out", str(tmp_path / "out"), "--model-dir", str(model_dir),
            "--steady-seconds", "2", "--drift-seconds", "4", "--window-seconds", "3",
        ]
    )  # fmt: skip
    output = capsys.readouterr().out
    assert code == 0, output
    assert "missed: none" in output
    pids = [int(p) for p in re.findall(r"up \(pid (\d+)\)", output)]
    assert len(pids) == 4  # sidecar, model server, Prometheus, Alertmanager
    assert "alerts that fired (Prometheus ALERTS, whole run):" in output
    assert "Watchdog(none)" in output  # the rules were loaded and evaluated
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # Predictions went over the sidecar's ingest socket, whose private folder is gone.
    (socket,) = re.findall(r"ingest 127\.0\.0\.1:\d+ and (\S+), metrics", output)
    assert Path(socket).name == demo.INGEST_SOCKET
    assert not Path(socket).parent.exists()
    for name in ("drift.json", "serving-metrics.prom", "sidecar-metrics.prom"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    predictions = tmp_path / "out" / demo.PREDICTIONS_DIR
    assert f"prediction logs: {predictions}/ (NDJSON" in output
    written = [
        line for path in predictions.glob("*.ndjson") for line in path.read_bytes().splitlines()
    ]
    assert written  # the sidecar, stopped after the model server, shipped what it spooled
    assert (tmp_path / "out" / demo.SPOOL_DIR / "committed.json").is_file()
