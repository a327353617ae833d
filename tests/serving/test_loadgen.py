"""The load generator: each scenario sends the traffic it promises, to an in-memory stub server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from scipy import stats

from serving._loadgen_traffic import MALFORMED_KINDS, Shift, Traffic, TrafficError
from serving.loadgen import (
    LoadConfig,
    LoadResult,
    TrafficPlan,
    load_rows,
    main,
    parse_shifts,
    run_load,
)

FEATURES = ("row", "width", "colour")
ROWS: list[dict[str, Any]] = [
    {"row": float(i), "width": 10.0 + i % 7, "colour": "red"} for i in range(40)
]


class StubServer:
    """A KServe V1 predict endpoint in memory: records bodies, refuses malformed instances."""

    def __init__(self) -> None:
        self.bodies: list[list[Any]] = []
        self.paths: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        instances = orjson.loads(request.content)["instances"]
        self.bodies.append(instances)
        for row in instances:
            if not isinstance(row, dict) or set(row) != set(FEATURES):
                return httpx.Response(422, json={"error": "instances[0]: bad shape"})
            if not isinstance(row["row"], float):
                return httpx.Response(422, json={"error": "instances[0].row: not a number"})
        return httpx.Response(200, json={"predictions": [0] * len(instances)})

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for body in self.bodies for row in body]


def _run(
    plan: TrafficPlan,
    server: StubServer,
    *,
    requests: int = 200,
    rate: float | None = None,
    duration: float = 60.0,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
) -> LoadResult:
    config = LoadConfig(
        url="http://stub",
        model="toy",
        rate=rate,
        concurrency=4,
        duration=duration,
        max_requests=requests,
    )
    transport = httpx.MockTransport(handler or server.handle)
    return asyncio.run(run_load(config, ROWS, plan, transport=transport))


def test_steady_replays_every_row_once_per_pass() -> None:
    """Steady traffic sends unchanged rows, each row exactly once in every pass over the data."""
    server = StubServer()
    result = _run(TrafficPlan("steady"), server, requests=2 * len(ROWS))
    assert result.requests == result.ok == 2 * len(ROWS)
    assert set(server.paths) == {"/v1/models/toy:predict"}
    ids = sorted(row["row"] for row in server.rows)
    assert ids == sorted([float(i) for i in range(len(ROWS))] * 2)
    originals = {row["row"]: row for row in ROWS}
    assert all(row == originals[row["row"]] for row in server.rows)


def test_request_order_is_reproducible_from_the_seed() -> None:
    """Request i is the same for a given seed whatever the interleaving, and differs by seed."""
    plan = TrafficPlan("drift", shifts=parse_shifts(["colour=blue@0.5"]), seed=3)
    first = [Traffic(ROWS, plan).request(i, 1.0).instances for i in range(30)]
    again = [Traffic(ROWS, plan).request(i, 1.0).instances for i in range(30)]
    other = TrafficPlan("drift", shifts=plan.shifts, seed=4)
    different = [Traffic(ROWS, other).request(i, 1.0).instances for i in range(30)]
    assert first == again
    assert first != different


def test_drift_shifts_only_the_chosen_features_after_the_drift_time() -> None:
    """Rows due before drift_after are untouched; later ones are scaled, offset or re-labelled."""
    plan = TrafficPlan(
        "drift", shifts=parse_shifts(["width*2", "row+0", "colour=blue"]), drift_after=0.5
    )
    server = StubServer()
    # At 200 requests/s, requests 0..99 are due before 0.5 s and 100..199 after it.
    result = _run(plan, server, requests=200, rate=200.0)
    assert result.by_kind == {"normal": 100, "drifted": 100}
    originals = {row["row"]: row for row in ROWS}
    for index, body in enumerate(server.bodies):
        (row,) = body
        source = originals[row["row"]]
        if index < 100:
            assert row == source
        else:
            assert row == {**source, "width": source["width"] * 2, "colour": "blue"}


def test_drift_probability_reweights_a_category() -> None:
    """``colour=blue@0.3`` relabels a binomially consistent share of rows, the rest keep theirs."""
    plan = TrafficPlan("drift", shifts=parse_shifts(["colour=blue@0.3"]))
    server = StubServer()
    _run(plan, server, requests=2000)
    blue = sum(row["colour"] == "blue" for row in server.rows)
    assert {row["colour"] for row in server.rows} == {"red", "blue"}
    assert stats.binomtest(blue, 2000, 0.3).pvalue > 1e-4


def test_errors_sends_malformed_instances_that_the_server_refuses() -> None:
    """About error_share of requests carry one malformed instance of each kind; all get a 4xx."""
    plan = TrafficPlan("errors", error_share=0.25)
    server = StubServer()
    result = _run(plan, server, requests=800)
    malformed = result.by_kind["malformed"]
    assert result.client_errors == malformed
    assert result.ok == 800 - malformed
    assert stats.binomtest(malformed, 800, 0.25).pvalue > 1e-4
    bad_rows = [body[0] for body in server.bodies if body[0] not in ROWS]
    assert len(bad_rows) == malformed
    kinds = {_kind_of(row) for row in bad_rows}
    assert kinds == set(MALFORMED_KINDS)


def _kind_of(row: Any) -> str:
    if isinstance(row, list):
        return "wrong_shape"
    if "no_such_feature" in row:
        return "unknown_feature"
    if "row" not in row:
        return "missing_feature"
    assert row["row"] == "not a number"
    return "invalid_type"


def test_slow_sends_heavy_requests() -> None:
    """The slow scenario makes about slow_share of requests carry slow_instances rows each."""
    plan = TrafficPlan("slow", slow_share=0.2, slow_instances=50)
    server = StubServer()
    result = _run(plan, server, requests=500)
    sizes = [len(body) for body in server.bodies]
    assert sorted(set(sizes)) == [1, 50]
    assert sizes.count(50) == result.by_kind["slow"]
    assert result.instances == sum(sizes)
    assert stats.binomtest(sizes.count(50), 500, 0.2).pvalue > 1e-4


def test_instances_per_request() -> None:
    """``instances_per_request`` rows go in each request."""
    server = StubServer()
    result = _run(TrafficPlan("steady", instances_per_request=4), server, requests=10)
    assert [len(body) for body in server.bodies] == [4] * 10
    assert result.instances == 40


def test_duration_bounds_the_schedule() -> None:
    """At a paced rate, exactly the requests due before the duration ends are sent."""
    server = StubServer()
    result = _run(TrafficPlan("steady"), server, requests=1000, rate=100.0, duration=0.25)
    assert result.requests == 25


def test_unanswered_requests_are_counted_not_raised() -> None:
    """A transport failure counts as a request without an answer and is left out of latency."""

    def refuse(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    result = _run(TrafficPlan("steady"), StubServer(), requests=5, handler=refuse)
    assert result.transport_errors == 5
    assert result.ok == 0
    assert result.latency_quantiles == {}
    assert "no answer: 5" in result.summary()


def test_summary_reports_rate_quantiles_and_statuses() -> None:
    """The printed summary holds the achieved rate, the three quantiles and the status counts."""
    result = _run(TrafficPlan("errors", error_share=0.5), StubServer(), requests=40)
    text = result.summary()
    assert "req/s" in text
    assert all(f"p{q} " in text for q in (50, 95, 99))
    assert "200: " in text
    assert "422: " in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mean_radius*1.25", Shift("mean_radius", "scale", 1.25)),
        ("mean_texture+5", Shift("mean_texture", "add", 5.0)),
        ("mean_texture+-2.5", Shift("mean_texture", "add", -2.5)),
        ("size_class=large@0.6", Shift("size_class", "set", "large", 0.6)),
        (" size_class = small ", Shift("size_class", "set", "small")),
    ],
)
def test_shift_parsing(text: str, expected: Shift) -> None:
    """Each documented shift syntax parses to the shift it names and prints back the same way."""
    parsed = Shift.parse(text)
    assert parsed == expected
    assert Shift.parse(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["mean_radius", "mean_radius*x", "a=b@1.5", "*2", "a*inf"])
def test_bad_shift_names_the_option(text: str) -> None:
    """A shift that does not parse is refused with a message naming --drift-features."""
    with pytest.raises(TrafficError, match="--drift-features"):
        Shift.parse(text)


def test_shift_of_an_unknown_feature_is_refused() -> None:
    """A drift of a column the data does not have is refused before anything is sent."""
    plan = TrafficPlan("drift", shifts=parse_shifts(["height*2"]))
    with pytest.raises(TrafficError, match="'height' is not a column"):
        Traffic(ROWS, plan)


def test_load_rows_reads_csv_without_the_label(tmp_path: Path) -> None:
    """A CSV file of rows loads as feature dicts; its ``label`` column is left out."""
    path = tmp_path / "rows.csv"
    path.write_text("a,size,label\n1.5,small,0\n2.5,large,1\n")
    assert load_rows(path) == [{"a": 1.5, "size": "small"}, {"a": 2.5, "size": "large"}]


def test_cli_refuses_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line exits 2 and names --data when the data file does not exist."""
    code = main(["--data", "holdout", "--model-dir", str(tmp_path), "--duration", "1"])
    assert code == 2
    assert "--data: no file at" in capsys.readouterr().err
