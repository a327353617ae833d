"""Tests of the ingest HTTP app against the real drift engine, through an in-memory transport."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import numpy as np
import orjson
import pytest
import structlog
from openapi_spec_validator import validate
from starlette.routing import Route
from structlog.testing import LogCapture

from sidecar.counters import IngestCounters
from sidecar.engine import EngineConfig
from sidecar.events import IngestLimits, ParsedEvents, parse_events
from sidecar.feedback import FeedbackStore
from sidecar.ingest import ProblemLog, create_ingest_app
from sidecar.monitors import MonitorRegistry
from sidecar.profile import CategoricalProfile, NumericProfile, Profile
from tests.support.profiles import make_profile

TOKEN = "s3cret-token"  # noqa: S105 - a test token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WALL_START = 1_795_597_200.0
"""2026-11-25T09:00:00Z in epoch seconds: the fake wall clock's start."""


@pytest.fixture
def anyio_backend() -> str:
    """Run the async tests on asyncio only."""
    return "asyncio"


class FakeClock:
    """A clock the test owns, so drift windows never depend on wall time."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def classifier_profile() -> Profile:
    """clf/1: numeric x, categorical c (a, b, c), categorical prediction 0/1."""
    rng = np.random.default_rng(3)
    return make_profile(
        model="clf",
        version="1",
        numeric={"x": rng.normal(size=1000)},
        categorical={"c": list(rng.choice(["a", "b", "c"], size=1000))},
        prediction=[str(v) for v in rng.integers(0, 2, size=1000)],
        prediction_kind="categorical",
    )


def regressor_profile() -> Profile:
    """reg/2: numeric x, numeric prediction."""
    rng = np.random.default_rng(4)
    return make_profile(
        model="reg",
        version="2",
        numeric={"x": rng.normal(size=1000)},
        prediction=rng.normal(size=1000),
    )


class Harness:
    """One ingest app with its real dependencies, a captured log and an HTTP client."""

    def __init__(
        self,
        *,
        profiles: list[Profile] | None = None,
        token: str | None = TOKEN,
        limits: IngestLimits | None = None,
        on_accepted: Callable[[ParsedEvents], None] | None = None,
        config: EngineConfig | None = None,
        body_timeout_seconds: float = 30.0,
    ) -> None:
        self.clock = FakeClock()
        self.wall_clock = FakeClock()
        self.wall_clock.now = WALL_START
        chosen = [classifier_profile(), regressor_profile()] if profiles is None else profiles
        self.monitors = MonitorRegistry.from_profiles(
            chosen,
            config or EngineConfig(min_window_values=5, snapshot_ttl_seconds=0.0),
            self.clock,
        )
        self.counters = IngestCounters()
        self.feedback = FeedbackStore(clock=self.clock)
        self.log = LogCapture()
        logger = structlog.wrap_logger(
            structlog.testing.CapturingLogger(),
            processors=[structlog.processors.add_log_level, self.log],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )
        self.app = create_ingest_app(
            monitors=self.monitors,
            counters=self.counters,
            feedback=self.feedback,
            limits=limits or IngestLimits(),
            token=token,
            logger=logger,
            on_accepted=on_accepted,
            clock=self.clock,
            wall_clock=self.wall_clock,
            body_timeout_seconds=body_timeout_seconds,
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(self.app), base_url="http://ingest", headers=AUTH
        )

    def monitor_counters(self, model: str = "clf", version: str = "1") -> Any:
        """The real monitor's cumulative counters."""
        monitor = self.monitors.get(model, version)
        assert monitor is not None
        return monitor.counters()

    def events_logged(self, name: str) -> list[Any]:
        """Captured log entries called ``name``."""
        return [e for e in self.log.entries if e["event"] == name]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    """A fresh app serving clf/1 and reg/2 with a token."""
    h = Harness()
    async with h.client:
        yield h


def event(i: int, **fields: Any) -> dict[str, Any]:
    """A valid clf/1 event; ``fields`` replace keys."""
    base: dict[str, Any] = {
        "id": f"ev-{i}",
        "timestamp": "2026-11-25T09:00:00Z",
        "latency_seconds": 0.01,
        "features": {"x": 0.1, "c": "a"},
        "prediction": 1,
    }
    base.update(fields)
    return base


def events_body(events: list[Any], model: str = "clf", version: str = "1") -> dict[str, Any]:
    """A /v1/events document."""
    return {"model": model, "version": version, "events": events}


def assert_error(response: httpx.Response, status: int, reason: str, field: str) -> str:
    """Check the JSON error shape and return the message."""
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["status"], error["reason"], error["field"]) == (status, reason, field)
    assert isinstance(error["message"], str)
    assert error["message"]
    return str(error["message"])


# --------------------------------------------------------------------------- /v1/events


@pytest.mark.anyio
async def test_a_latency_too_large_to_ship_is_rejected_naming_the_bound(harness: Harness) -> None:
    """Latency above 1e9 s (no 64-bit nanosecond count holds it) is rejected; 1e9 s is kept."""
    events = [event(0, latency_seconds=1e9), event(1, latency_seconds=1e10)]
    response = await harness.client.post("/v1/events", json=events_body(events))
    assert response.status_code == 202
    answer = response.json()
    assert answer["accepted"] == 1
    assert answer["rejected"] == [
        {
            "index": 1,
            "field": "events[1].latency_seconds",
            "reason": "invalid_value",
            "error": "events[1].latency_seconds: must be at most 1e+09 seconds (shipped as a "
            "64-bit count of nanoseconds), got 10000000000.0",
        }
    ]


@pytest.mark.anyio
async def test_events_answer_202_with_rejections_and_warnings(harness: Harness) -> None:
    """A mixed batch answers 202 with accepted, rejected and warnings in the documented shape."""
    events = [
        event(0),
        event(1, latency_seconds=-1),
        event(2, features={"x": "oops", "c": "b"}),
    ]
    response = await harness.client.post("/v1/events", json=events_body(events))
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 2,
        "rejected": [
            {
                "index": 1,
                "field": "events[1].latency_seconds",
                "reason": "invalid_value",
                "error": "events[1].latency_seconds: must be finite and >= 0, got -1",
            }
        ],
        "warnings": [
            {
                "index": 2,
                "field": "events[2].features.x",
                "warning": "must be a finite number, got string; not observed",
            }
        ],
        "warnings_dropped": 0,
    }


@pytest.mark.anyio
async def test_accepted_events_reach_monitor_and_counters(harness: Harness) -> None:
    """Accepted events are observed by the monitor and counted; rejected ones only counted."""
    events = [event(0), event(1, status="error"), event(2, id=7), event(0)]
    response = await harness.client.post("/v1/events", json=events_body(events))
    assert response.json()["accepted"] == 2
    counts = harness.monitor_counters()
    assert counts.predictions == {"ok": 1, "error": 1}
    assert counts.latency_count == 2
    assert harness.counters.events_received == 4
    assert harness.counters.events_accepted == 2
    assert harness.counters.events_rejected == {
        "missing_field": 0,
        "invalid_type": 1,
        "invalid_value": 0,
        "duplicate_id": 1,
    }


@pytest.mark.anyio
async def test_rejections_are_logged_once_per_kind_not_per_event(harness: Harness) -> None:
    """Fifty events rejected for one field and reason produce one log line, never one per event."""
    events = [event(i, latency_seconds="slow") for i in range(50)] + [event(99)]
    await harness.client.post("/v1/events", json=events_body(events))
    [line] = harness.events_logged("events_rejected")
    assert (line["model"], line["version"]) == ("clf", "1")
    assert (line["field"], line["reason"]) == ("events[].latency_seconds", "invalid_type")
    assert (line["events"], line["received"], line["accepted"]) == (50, 51, 1)
    assert line["first_error"] == "events[0].latency_seconds: must be a number, got string"
    assert len(harness.log.entries) == 1


@pytest.mark.anyio
async def test_a_problem_repeated_every_batch_is_logged_once_then_summarised(
    harness: Harness,
) -> None:
    """The same stray feature in every batch logs once, then one summary per 60 s of repeats."""
    body = events_body([event(0, features={"x": 0.1, "c": "a", "extra": 1})])
    for _ in range(5):
        await harness.client.post("/v1/events", json=body)
    [first] = harness.events_logged("event_warnings")
    assert (first["field"], first["first_warning"]) == (
        "events[].features.extra",
        "events[0].features.extra: feature 'extra' is not in the profile of clf/1; "
        "counted, not monitored",
    )
    assert harness.events_logged("event_problems_repeated") == []

    harness.clock.now += 59.9
    await harness.client.post("/v1/events", json=body)
    assert harness.events_logged("event_problems_repeated") == []
    harness.clock.now += 0.1
    await harness.client.post("/v1/events", json=body)
    await harness.client.post("/v1/events", json=body)
    [summary] = harness.events_logged("event_problems_repeated")
    assert summary["since_seconds"] == 60.0
    assert summary["warnings"] == [
        {"model": "clf/1", "field": "events[].features.extra", "events": 6}
    ]
    assert summary["rejected"] == []
    assert len(harness.events_logged("event_warnings")) == 1

    harness.clock.now += 60.0
    await harness.client.post("/v1/events", json=body)
    second = harness.events_logged("event_problems_repeated")[1]
    assert second["warnings"] == [
        {"model": "clf/1", "field": "events[].features.extra", "events": 2}
    ]


@pytest.mark.anyio
async def test_each_new_problem_kind_gets_its_own_first_line(harness: Harness) -> None:
    """A new field, a new reason or another model version is logged even after earlier kinds."""
    await harness.client.post("/v1/events", json=events_body([event(0, latency_seconds="x")]))
    await harness.client.post("/v1/events", json=events_body([event(0, latency_seconds=-1)]))
    await harness.client.post("/v1/events", json=events_body([event(0, status="late")]))
    await harness.client.post(
        "/v1/events",
        json=events_body([{**event(0, latency_seconds="x"), "prediction": 0.5}], "reg", "2"),
    )
    await harness.client.post("/v1/events", json=events_body([event(0, latency_seconds="x")]))
    lines = harness.events_logged("events_rejected")
    assert [(e["model"], e["field"], e["reason"]) for e in lines] == [
        ("clf", "events[].latency_seconds", "invalid_type"),
        ("clf", "events[].latency_seconds", "invalid_value"),
        ("clf", "events[].status", "invalid_value"),
        ("reg", "events[].latency_seconds", "invalid_type"),
    ]


def test_problem_kinds_remembered_are_capped() -> None:
    """Past max_kinds, new problem kinds are not logged one by one but still summed."""
    log = LogCapture()
    logger = structlog.wrap_logger(
        structlog.testing.CapturingLogger(),
        processors=[log],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    clock = FakeClock()
    problems = ProblemLog(logger, clock, interval_seconds=60.0, max_kinds=2)
    profile = classifier_profile()
    for name in ("a1", "a2", "a3", "a4"):
        body = events_body([event(0, features={"x": 0.1, "c": "a", name: 1})])
        problems.record(parse_events(orjson.dumps(body), lambda m, v: profile, IngestLimits()))
    assert [e["field"] for e in log.entries] == ["events[].features.a1", "events[].features.a2"]
    clock.now += 60.0
    body = events_body([event(0, features={"x": 0.1, "c": "a", "a1": 1})])
    problems.record(parse_events(orjson.dumps(body), lambda m, v: profile, IngestLimits()))
    assert log.entries[-1]["event"] == "event_problems_repeated"
    assert log.entries[-1]["warnings"] == [
        {"model": "clf/1", "field": f"events[].features.{name}", "events": 1}
        for name in ("a1", "a3", "a4")
    ]


@pytest.mark.anyio
async def test_accepted_events_are_never_logged(harness: Harness) -> None:
    """A clean request logs nothing."""
    response = await harness.client.post("/v1/events", json=events_body([event(0), event(1)]))
    assert response.status_code == 202
    assert harness.log.entries == []


@pytest.mark.anyio
async def test_on_accepted_gets_the_parsed_events(harness: Harness) -> None:
    """on_accepted receives the parsed events of requests that accepted at least one event."""
    seen: list[ParsedEvents] = []
    h = Harness(on_accepted=seen.append)
    async with h.client:
        await h.client.post("/v1/events", json=events_body([event(0), event(1, id=None)]))
        await h.client.post("/v1/events", json=events_body([event(2, id=None)]))
    [parsed] = seen
    assert [e["id"] for e in parsed.accepted_events] == ["ev-0"]
    assert parsed.accepted_events[0]["timestamp"] == "2026-11-25T09:00:00Z"


@pytest.mark.anyio
async def test_unknown_model_is_404_and_counted(harness: Harness) -> None:
    """An unknown model answers 404 listing the served models, and is counted by reason."""
    response = await harness.client.post("/v1/events", json=events_body([event(0)], model="x"))
    message = assert_error(response, 404, "unknown_model", "model")
    assert "'clf', 'reg'" in message
    assert harness.counters.requests_rejected["unknown_model"] == 1
    [line] = harness.events_logged("request_rejected")
    assert line["reason"] == "unknown_model"


@pytest.mark.anyio
async def test_unknown_version_is_404_listing_versions(harness: Harness) -> None:
    """An unknown version answers 404 naming the version and the model's served versions."""
    response = await harness.client.post("/v1/events", json=events_body([event(0)], version="9"))
    message = assert_error(response, 404, "unknown_model", "version")
    assert "known versions: '1'" in message


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "reason", "field"),
    [
        (b"{not json", "invalid_json", "body"),
        (
            b'{"model": "clf", "version": "1", "events": [{"latency_seconds": NaN}]}',
            "invalid_json",
            "body",
        ),
        (
            b'{"model": "clf", "version": "1", "events": [{"latency_seconds": 1e400}]}',
            "invalid_json",
            "body",
        ),
        (b"[]", "invalid_body", "body"),
        (b'{"model": "clf", "version": "1", "events": "all"}', "invalid_body", "events"),
        (b'{"model": ["clf"], "version": "1", "events": []}', "invalid_body", "model"),
    ],
    ids=["not-json", "nan", "overflow", "array", "events-string", "model-array"],
)
async def test_bad_bodies_are_400(
    harness: Harness, content: bytes, reason: str, field: str
) -> None:
    """Bodies that are not usable answer 400 with the reason and field, and are counted."""
    response = await harness.client.post(
        "/v1/events", content=content, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, reason, field)
    assert harness.counters.requests_rejected[reason] == 1


# --------------------------------------------------------------------------- auth, media, size


@pytest.mark.anyio
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
async def test_missing_or_wrong_token_is_401(harness: Harness, authorization: str | None) -> None:
    """Without the right bearer token every /v1 route answers 401 with WWW-Authenticate."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(harness.app), base_url="http://ingest", headers=headers
    ) as client:
        posted = await client.post("/v1/events", json=events_body([event(0)]))
        drift = await client.get("/v1/drift")
    assert_error(posted, 401, "unauthorized", "Authorization")
    assert posted.headers["www-authenticate"] == "Bearer"
    assert_error(drift, 401, "unauthorized", "Authorization")
    assert harness.counters.requests_rejected["unauthorized"] == 1
    assert harness.monitor_counters().latency_count == 0


@pytest.mark.anyio
async def test_no_token_configured_needs_no_header() -> None:
    """When no token is configured, requests without Authorization are served."""
    h = Harness(token=None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(h.app), base_url="http://ingest"
    ) as client:
        response = await client.post("/v1/events", json=events_body([event(0)]))
    assert response.status_code == 202


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Content-Type": "text/plain"}, "Content-Type"),
        ({"Content-Type": "application/x-ndjson"}, "Content-Type"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, "Content-Encoding"),
    ],
)
async def test_wrong_media_type_is_415(
    harness: Harness, headers: dict[str, str], field: str
) -> None:
    """Anything but an uncompressed application/json body answers 415 naming the header."""
    content = orjson.dumps(events_body([event(0)]))
    response = await harness.client.post("/v1/events", content=content, headers=headers)
    assert_error(response, 415, "unsupported_media_type", field)
    assert harness.counters.requests_rejected["unsupported_media_type"] == 1


@pytest.mark.anyio
async def test_missing_content_type_is_415(harness: Harness) -> None:
    """A body without a Content-Type answers 415."""
    response = await harness.client.post("/v1/events", content=b"{}")
    assert_error(response, 415, "unsupported_media_type", "Content-Type")


@pytest.mark.anyio
async def test_json_with_charset_parameter_is_accepted(harness: Harness) -> None:
    """A media type parameter such as charset does not make JSON unacceptable."""
    content = orjson.dumps(events_body([event(0)]))
    response = await harness.client.post(
        "/v1/events", content=content, headers={"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert response.status_code == 202


@pytest.mark.anyio
async def test_declared_oversized_body_is_413() -> None:
    """A Content-Length above the limit answers 413 too_large."""
    h = Harness(limits=IngestLimits(max_body_bytes=100))
    async with h.client:
        response = await h.client.post("/v1/events", json=events_body([event(0)] * 3))
    assert_error(response, 413, "too_large", "body")
    assert h.counters.requests_rejected["too_large"] == 1


@pytest.mark.anyio
async def test_streamed_oversized_body_is_cut_off_while_reading() -> None:
    """A chunked body without Content-Length is refused as soon as it passes the limit."""
    limit, chunk = 10_000, b"x" * 1000
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while pulled < 1000:
            pulled += 1
            yield chunk

    h = Harness(limits=IngestLimits(max_body_bytes=limit))
    async with h.client:
        response = await h.client.post(
            "/v1/events", content=endless(), headers={"Content-Type": "application/json"}
        )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too_large", "body")
    assert pulled <= limit // len(chunk) + 2


@pytest.mark.anyio
async def test_a_body_that_stops_arriving_is_408_timeout() -> None:
    """A body declared as 10 bytes of which 2 arrive is answered 408 once the deadline passes."""
    h = Harness(body_timeout_seconds=0.05)
    never = anyio.Event()
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"{}", "more_body": True}
        await never.wait()  # the rest of the body never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"host", b"ingest"),
        (b"content-type", b"application/json"),
        (b"content-length", b"10"),
        (b"authorization", AUTH["Authorization"].encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8081),
    }  # fmt: skip
    with anyio.fail_after(30):
        await h.app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    error = orjson.loads(body)["error"]
    assert (error["status"], error["reason"], error["field"]) == (408, "timeout", "body")
    assert "2 bytes of 10 received" in error["message"]
    assert h.counters.requests_rejected["timeout"] == 1
    [line] = h.events_logged("request_rejected")
    assert (line["status"], line["reason"]) == (408, "timeout")


@pytest.mark.anyio
async def test_hundred_thousand_event_batch_is_413(harness: Harness) -> None:
    """100 000 events are refused with 413: too_large as real events, too_many_events if tiny."""
    real = await harness.client.post(
        "/v1/events", json=events_body([event(i) for i in range(100_000)])
    )
    assert_error(real, 413, "too_large", "body")
    tiny = await harness.client.post("/v1/events", json=events_body([0] * 100_000))
    assert_error(tiny, 413, "too_many_events", "events")
    assert harness.monitor_counters().latency_count == 0


# --------------------------------------------------------------------------- cardinality


@pytest.mark.anyio
async def test_ten_thousand_categories_do_not_grow_the_bins(harness: Harness) -> None:
    """10 000 distinct values of a categorical feature land in __other__; no bin is added."""
    before = harness.monitor_counters().features[1]
    events = [event(i, features={"x": 0.0, "c": f"value-{i}"}) for i in range(10_000)]
    response = await harness.client.post("/v1/events", json=events_body(events))
    assert response.json()["accepted"] == 10_000
    after = harness.monitor_counters().features[1]
    assert after.feature == "c"
    c_profile = classifier_profile().feature("c")
    assert isinstance(c_profile, CategoricalProfile)
    assert after.bins == before.bins == (*c_profile.categories, "__other__")
    assert len(after.bins) == 4
    assert after.unseen == 10_000
    assert int(after.bin_totals[-1]) == 10_000


@pytest.mark.anyio
async def test_unknown_features_are_counted_by_the_monitor(harness: Harness) -> None:
    """Unknown feature names reach the monitor as a count and never as a feature."""
    events = [event(i, features={"x": 0.0, "c": "a", f"new-{i}": 1}) for i in range(30)]
    response = await harness.client.post("/v1/events", json=events_body(events))
    assert len(response.json()["warnings"]) == 30
    counts = harness.monitor_counters()
    assert counts.unknown_features == 30
    assert [f.feature for f in counts.features] == ["x", "c"]


# --------------------------------------------------------------------------- /v1/drift


@pytest.mark.anyio
async def test_drift_lists_every_model_with_null_for_undefined(harness: Harness) -> None:
    """With empty windows every model is listed, statistics are null, edges are the profile's."""
    response = await harness.client.get("/v1/drift")
    assert response.status_code == 200
    models = response.json()["models"]
    assert [(m["model"], m["version"]) for m in models] == [("clf", "1"), ("reg", "2")]
    clf = models[0]
    assert clf["window_events"] == 0
    assert clf["window_seconds"] == 3600.0
    assert (clf["correction"], clf["alpha"]) == ("benjamini-hochberg", 0.05)
    x, c = clf["features"]
    assert (x["psi"], x["statistic"], x["pvalue"], x["pvalue_adjusted"]) == (None, None, None, None)
    assert x["drifted"] is False
    profile = classifier_profile()
    x_profile = profile.feature("x")
    c_profile = profile.feature("c")
    assert isinstance(x_profile, NumericProfile)
    assert isinstance(c_profile, CategoricalProfile)
    assert x["psi_edges"] == x_profile.psi_edges.tolist()
    assert c["categories"] == list(c_profile.categories)
    assert clf["prediction"]["feature"] == "prediction"


@pytest.mark.anyio
async def test_drift_reports_statistics_after_events(harness: Harness) -> None:
    """After enough events the drift snapshot carries finite statistics and the window count."""
    rng = np.random.default_rng(9)
    events = [
        event(i, features={"x": float(v), "c": "a"}) for i, v in enumerate(rng.normal(size=200))
    ]
    await harness.client.post("/v1/events", json=events_body(events))
    response = await harness.client.get("/v1/drift", params={"model": "clf", "version": "1"})
    [snapshot] = response.json()["models"]
    assert snapshot["window_events"] == 200
    x = snapshot["features"][0]
    assert x["window_values"] == 200
    assert isinstance(x["psi"], float)
    assert 0.0 <= x["pvalue"] <= 1.0


@pytest.mark.anyio
async def test_drift_computed_at_is_wall_clock_epoch_seconds(harness: Harness) -> None:
    """computed_at is the wall clock in epoch seconds, not the engine's monotonic reading."""
    harness.wall_clock.now = WALL_START + 12.5
    response = await harness.client.get("/v1/drift", params={"model": "clf"})
    [snapshot] = response.json()["models"]
    assert snapshot["computed_at"] == WALL_START + 12.5


@pytest.mark.anyio
async def test_a_cached_snapshot_keeps_the_epoch_time_it_was_computed_at() -> None:
    """A snapshot served from the cache reports when it was computed, not when it was served."""
    h = Harness(config=EngineConfig(snapshot_ttl_seconds=10.0))
    async with h.client:
        await h.client.get("/v1/drift", params={"model": "clf"})
        h.clock.now += 4.0
        h.wall_clock.now += 4.0
        response = await h.client.get("/v1/drift", params={"model": "clf"})
    [snapshot] = response.json()["models"]
    assert snapshot["computed_at"] == WALL_START


@pytest.mark.anyio
async def test_drift_filters_by_model(harness: Harness) -> None:
    """The model filter selects that model's versions only."""
    response = await harness.client.get("/v1/drift", params={"model": "reg"})
    assert [m["model"] for m in response.json()["models"]] == ["reg"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"model": "nope"}, "model"),
        ({"model": "clf", "version": "2"}, "version"),
        ({"version": "7"}, "version"),
    ],
)
async def test_drift_unknown_filter_is_404(
    harness: Harness, params: dict[str, str], field: str
) -> None:
    """A drift filter that matches no served model version answers 404 naming the filter."""
    response = await harness.client.get("/v1/drift", params=params)
    assert_error(response, 404, "unknown_model", field)


# --------------------------------------------------------------------------- health


@pytest.mark.anyio
async def test_healthz_and_readyz(harness: Harness) -> None:
    """GET /healthz answers 200 and GET /readyz lists the served models, both without a token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(harness.app), base_url="http://ingest"
    ) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": {"clf": ["1"], "reg": ["2"]}}


@pytest.mark.anyio
async def test_readyz_is_503_without_profiles() -> None:
    """GET /readyz answers 503 not_ready when no monitor is loaded."""
    h = Harness(profiles=[])
    async with h.client:
        response = await h.client.get("/readyz")
    assert_error(response, 503, "not_ready", "")


@pytest.mark.anyio
async def test_unknown_path_and_wrong_method_are_json(harness: Harness) -> None:
    """Unknown paths answer JSON 404 and wrong methods JSON 405 with an Allow header."""
    missing = await harness.client.get("/v2/events")
    assert_error(missing, 404, "not_found", "path")
    wrong = await harness.client.get("/v1/events")
    assert_error(wrong, 405, "method_not_allowed", "method")
    assert wrong.headers["allow"] == "POST"


# --------------------------------------------------------------------------- feedback


@pytest.mark.anyio
async def test_feedback_gives_accuracy_for_a_classifier(harness: Harness) -> None:
    """Labels joined to categorical predictions give accuracy over the joined labels."""
    events = [event(i, prediction=p) for i, p in enumerate([1, 0, 1, 1])]
    await harness.client.post("/v1/events", json=events_body(events))
    labels = [
        {"id": "ev-0", "label": 1},
        {"id": "ev-1", "label": "1"},
        {"id": "ev-2", "label": True},
        {"id": "ev-3", "label": 1.0},
        {"id": "ev-404", "label": 0},
        {"id": "ev-5", "label": [1]},
    ]
    response = await harness.client.post(
        "/v1/feedback", json={"model": "clf", "version": "1", "labels": labels}
    )
    assert response.status_code == 202
    answer = response.json()
    assert (answer["joined"], answer["unmatched"]) == (4, 1)
    assert [r["field"] for r in answer["rejected"]] == ["labels[5].label"]
    [quality] = harness.feedback.quality()
    assert (quality.model, quality.metric, quality.labels) == ("clf", "accuracy", 4)
    assert quality.value == pytest.approx(2 / 4)
    assert harness.counters.feedback_labels == {"joined": 4, "unmatched": 1, "rejected": 1}


@pytest.mark.anyio
async def test_feedback_gives_mae_for_a_regressor(harness: Harness) -> None:
    """Labels joined to numeric predictions give the mean absolute error."""
    events = [event(i, features={"x": 0.0}, prediction=p) for i, p in enumerate([1.0, 2.0, None])]
    await harness.client.post("/v1/events", json=events_body(events, "reg", "2"))
    labels = [{"id": "ev-0", "label": 1.5}, {"id": "ev-1", "label": 4}, {"id": "ev-2", "label": 0}]
    response = await harness.client.post(
        "/v1/feedback", json={"model": "reg", "version": "2", "labels": labels}
    )
    assert response.json() == {"joined": 2, "unmatched": 1, "rejected": []}
    [quality] = harness.feedback.quality()
    assert (quality.metric, quality.labels) == ("mean_absolute_error", 2)
    assert quality.value == pytest.approx((0.5 + 2.0) / 2)


@pytest.mark.anyio
async def test_feedback_has_the_same_refusals(harness: Harness) -> None:
    """Feedback is refused like events: unknown model 404, wrong media type 415, bad JSON 400."""
    unknown = await harness.client.post(
        "/v1/feedback", json={"model": "clf", "version": "3", "labels": []}
    )
    assert_error(unknown, 404, "unknown_model", "version")
    media = await harness.client.post(
        "/v1/feedback", content=b"{}", headers={"Content-Type": "text/csv"}
    )
    assert_error(media, 415, "unsupported_media_type", "Content-Type")
    bad = await harness.client.post(
        "/v1/feedback", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert_error(bad, 400, "invalid_json", "body")


# --------------------------------------------------------------------------- last resort


@pytest.mark.anyio
async def test_a_bug_becomes_a_logged_500_and_the_app_keeps_serving() -> None:
    """A bug inside the app answers a JSON 500, is logged with its traceback, and is survived."""
    calls = 0

    def broken(_: ParsedEvents) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("spool exploded")

    h = Harness(on_accepted=broken)
    async with h.client:
        failed = await h.client.post("/v1/events", json=events_body([event(0)]))
        after = await h.client.post("/v1/events", json=events_body([event(1)]))
    assert_error(failed, 500, "internal_error", "")
    assert "spool exploded" not in failed.text
    [line] = h.events_logged("ingest_bug")
    assert line["log_level"] == "error"
    assert line["exc_info"] is True
    assert after.status_code == 202


# --------------------------------------------------------------------------- openapi


def served_operations(harness: Harness) -> set[tuple[str, str]]:
    """Every (path, method) the app routes, HEAD aside (Starlette adds it to GET)."""
    return {
        (route.path, method.lower())
        for route in harness.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


@pytest.mark.anyio
async def test_openapi_lists_every_route_the_app_serves(harness: Harness) -> None:
    """The OpenAPI document is valid 3.1 and describes exactly the served routes and methods."""
    response = await harness.client.get("/openapi.json")
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    described = {
        (path, method) for path, operations in document["paths"].items() for method in operations
    }
    assert described == served_operations(harness)
    assert len(described) == 6


@pytest.mark.anyio
async def test_openapi_documents_error_codes_and_limits(harness: Harness) -> None:
    """Both POST routes document every refusal status and the configured limits."""
    document = (await harness.client.get("/openapi.json")).json()
    for path in ("/v1/events", "/v1/feedback"):
        responses = document["paths"][path]["post"]["responses"]
        assert set(responses) == {"202", "400", "401", "404", "405", "408", "413", "415"}
    events = document["components"]["schemas"]["EventsRequest"]["properties"]["events"]
    assert events["maxItems"] == IngestLimits().max_events
