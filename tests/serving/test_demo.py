"""The demo: its live view's arithmetic and rendering, and a short real run that cleans up."""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from serving import demo, train
from serving._demo_view import (
    LiveView,
    Observer,
    histogram_quantile,
    parse_server,
    render_line,
)

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


@pytest.mark.slow
def test_short_demo_catches_the_drift_and_leaves_no_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short real demo run flags every shifted feature, exits 0, and its children are gone."""
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
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for name in ("drift.json", "serving-metrics.prom", "sidecar-metrics.prom"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    predictions = tmp_path / "out" / demo.PREDICTIONS_DIR
    assert f"prediction logs: {predictions}/ (NDJSON" in output
    written = [
        line for path in predictions.glob("*.ndjson") for line in path.read_bytes().splitlines()
    ]
    assert written  # the sidecar, stopped after the model server, shipped what it spooled
    assert (tmp_path / "out" / demo.SPOOL_DIR / "committed.json").is_file()
