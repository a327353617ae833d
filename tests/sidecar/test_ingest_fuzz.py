"""Fuzz POST /v1/events and /v1/feedback: whatever a client sends, the answer is 202 or a JSON 4xx.

The app under test is one long-lived instance (real engine, real feedback store), so the fuzzing
also checks that no input leaves it in a state where it stops serving valid requests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import numpy as np
import orjson
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import LogCapture

from sidecar.counters import IngestCounters
from sidecar.engine import EngineConfig
from sidecar.events import IngestLimits
from sidecar.feedback import FeedbackStore
from sidecar.ingest import create_ingest_app
from sidecar.monitors import MonitorRegistry
from tests.support.profiles import make_profile

_RNG = np.random.default_rng(11)
_PROFILES = [
    make_profile(
        model="clf",
        version="1",
        numeric={"x": _RNG.normal(size=300)},
        categorical={"c": ["a", "b", "c"] * 100},
        prediction=["0", "1"] * 150,
        prediction_kind="categorical",
    ),
    make_profile(
        model="reg",
        version="1",
        numeric={"x": _RNG.normal(size=300)},
        prediction=_RNG.normal(size=300),
    ),
]
_LOG = LogCapture()
_COUNTERS = IngestCounters()
_APP = create_ingest_app(
    monitors=MonitorRegistry.from_profiles(_PROFILES, EngineConfig()),
    counters=_COUNTERS,
    feedback=FeedbackStore(capacity=1000, window=100),
    limits=IngestLimits(max_body_bytes=64 * 1024, max_events=50, max_warnings=5),
    token=None,
    logger=structlog.wrap_logger(
        structlog.testing.CapturingLogger(),
        processors=[structlog.processors.add_log_level, _LOG],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    ),
)
_ALLOWED = {202, 400, 404, 413, 415}
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_field_names = st.sampled_from(
    ["id", "timestamp", "latency_seconds", "status", "features", "prediction", "scores",
     "trace_id", "attributes", "x", "c", "label"]
)  # fmt: skip
_event = st.dictionaries(_field_names, _json, max_size=9) | _json
_feature_values = st.dictionaries(st.sampled_from(["x", "c", "other"]), _json, max_size=3)
_near_valid_event = st.fixed_dictionaries(
    {
        "id": st.text(max_size=6) | _json,
        "timestamp": st.sampled_from(["2026-11-25T09:00:00Z", "2026-13-01T00:00:00Z", 0, -1e20])
        | _json,
        "latency_seconds": st.floats(allow_nan=False) | _json,
        "features": _feature_values | _json,
        "prediction": _json,
    },
    optional={"status": _json, "scores": _json, "trace_id": _json, "attributes": _json},
)
_model = st.sampled_from(["clf", "reg", "nope"]) | _json
_version = st.sampled_from(["1", "2"]) | _json


def _post(path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(_APP), base_url="http://ingest"
        ) as client:
            return await client.post(path, content=content, headers={"Content-Type": content_type})

    return asyncio.run(go())


def _dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)


def _check(response: httpx.Response) -> None:
    assert response.status_code in _ALLOWED, response.text
    body = response.json()
    if response.status_code != 202:
        assert set(body["error"]) == {"status", "reason", "field", "message"}
    assert not [e for e in _LOG.entries if e["event"] == "ingest_bug"]


def _still_serving() -> None:
    event = {
        "id": "probe",
        "timestamp": "2026-11-25T09:00:00Z",
        "latency_seconds": 0.01,
        "features": {"x": 0.5, "c": "a"},
        "prediction": 1,
    }
    probe = _post("/v1/events", _dumps({"model": "clf", "version": "1", "events": [event]}))
    assert probe.status_code == 202
    assert probe.json()["accepted"] == 1


@_FUZZ
@given(document=_json)
def test_arbitrary_json_never_fails_the_server(document: Any) -> None:
    """Any JSON document answers 202 or a JSON 4xx, never a 5xx."""
    _check(_post("/v1/events", _dumps(document)))
    _still_serving()


@_FUZZ
@given(
    model=_model,
    version=_version,
    events=st.lists(_event | _near_valid_event, max_size=8),
)
def test_arbitrary_events_never_fail_the_server(
    model: Any, version: Any, events: list[Any]
) -> None:
    """Envelopes holding arbitrary and almost-valid events answer 202 or a JSON 4xx."""
    _check(_post("/v1/events", _dumps({"model": model, "version": version, "events": events})))
    _still_serving()


@_FUZZ
@given(
    raw=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "text/plain"])
)
def test_arbitrary_bytes_never_fail_the_server(raw: bytes, content_type: str) -> None:
    """Raw bytes of any kind answer a JSON 4xx (or 202 when they happen to be valid)."""
    _check(_post("/v1/events", raw, content_type))
    _still_serving()


@_FUZZ
@given(
    raw=st.sampled_from(
        [
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e400",
            b"-1e400",
            b"99999999999999999999999",
            b'"\\ud800"',
            b"[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]",
            b'"\xc3\x28"',
            b"1E-400",
        ]
    ),
    field=st.sampled_from(["latency_seconds", "timestamp", "prediction", "id", "features"]),
)
def test_tricky_literals_in_event_fields_never_fail_the_server(raw: bytes, field: str) -> None:
    """Overflowing numbers, NaN tokens, lone surrogates and bad UTF-8 in an event never fail."""
    event = {
        "id": "e",
        "timestamp": 0,
        "latency_seconds": 0.1,
        "features": {"x": 1.0},
        "prediction": 1,
    }
    body = _dumps({"model": "reg", "version": "1", "events": [event]})
    placeholder = _dumps({field: event[field]})[1:-1]
    assert placeholder in body
    _check(_post("/v1/events", body.replace(placeholder, f'"{field}":'.encode() + raw, 1)))
    _still_serving()


@_FUZZ
@given(
    model=_model,
    labels=st.lists(
        st.fixed_dictionaries({"id": st.sampled_from(["probe", "x"]) | _json, "label": _json})
        | _json,
        max_size=8,
    ),
)
def test_arbitrary_feedback_never_fails_the_server(model: Any, labels: list[Any]) -> None:
    """Feedback bodies of any shape answer 202 or a JSON 4xx."""
    _check(_post("/v1/feedback", _dumps({"model": model, "version": "1", "labels": labels})))
    _still_serving()
