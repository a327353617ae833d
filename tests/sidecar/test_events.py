"""Tests of the ingest parser: request-level refusals, per-event rejections and the columns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from sidecar.columns import PREDICTION_KEY
from sidecar.events import (
    IngestLimits,
    ParsedEvents,
    RequestRejected,
    parse_events,
    parse_feedback,
)
from sidecar.profile import Profile
from tests.support.profiles import make_profile

LIMITS = IngestLimits()


@pytest.fixture(scope="module")
def profile() -> Profile:
    """Model m/1: numeric x and y, categorical c (a, b), numeric prediction."""
    rng = np.random.default_rng(7)
    return make_profile(
        numeric={"x": rng.normal(size=500), "y": rng.uniform(size=500)},
        categorical={"c": ["a", "b", "a", "a"]},
        prediction=rng.normal(size=500),
    )


@pytest.fixture(scope="module")
def lookup(profile: Profile) -> Callable[[str, str], Profile | None]:
    """Serves only m/1."""
    return lambda model, version: profile if (model, version) == ("m", "1") else None


def catalogue() -> dict[str, list[str]]:
    """What the 404 messages list as known."""
    return {"m": ["1", "2"], "other": ["9"]}


def event(i: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid event, with ``fields`` replacing (or, set to ``...``, removing) keys."""
    base: dict[str, Any] = {
        "id": f"e{i}",
        "timestamp": "2026-11-25T09:00:00.123Z",
        "latency_seconds": 0.004,
        "status": "ok",
        "features": {"x": 1.5, "y": 0.25, "c": "a"},
        "prediction": 0.7,
    }
    for key, value in fields.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def body(events: list[Any], **envelope: Any) -> bytes:
    """A request body for m/1 holding ``events``."""
    return orjson.dumps({"model": "m", "version": "1", "events": events, **envelope})


def parse(raw: bytes, lookup: Callable[[str, str], Profile | None], **limits: int) -> ParsedEvents:
    """parse_events with the module's catalogue and optional limit overrides."""
    return parse_events(raw, lookup, IngestLimits(**limits), catalogue=catalogue)


def refused(
    raw: bytes, lookup: Callable[[str, str], Profile | None], **limits: int
) -> RequestRejected:
    """The RequestRejected that parsing ``raw`` raises."""
    with pytest.raises(RequestRejected) as info:
        parse(raw, lookup, **limits)
    return info.value


# --------------------------------------------------------------------------- whole request


def test_valid_batch_becomes_columns(lookup: Callable[[str, str], Profile | None]) -> None:
    """Valid events become float64 and category columns in event order, with zero problem counts."""
    events = [
        event(0, features={"x": 1, "y": 2.5, "c": "a"}, prediction=3),
        event(1, features={"x": -1.5, "y": 0.0, "c": "zzz"}, status="error", latency_seconds=2),
    ]
    parsed = parse(body(events), lookup)
    cols = parsed.columns
    assert (parsed.accepted, parsed.received, parsed.rejections) == (2, 2, [])
    assert list(cols.ids) == ["e0", "e1"]
    np.testing.assert_array_equal(cols.numeric["x"], [1.0, -1.5])
    np.testing.assert_array_equal(cols.numeric["y"], [2.5, 0.0])
    assert cols.numeric["x"].dtype == np.float64
    assert list(cols.categorical["c"]) == ["a", "zzz"]
    assert isinstance(cols.prediction, np.ndarray)
    np.testing.assert_array_equal(cols.prediction, [3.0, 0.7])
    np.testing.assert_array_equal(cols.latency_seconds, [0.004, 2.0])
    assert dict(cols.status_counts) == {"ok": 1, "error": 1}
    assert dict(cols.missing) == {"x": 0, "y": 0, "c": 0, PREDICTION_KEY: 0}
    assert dict(cols.type_errors) == {"x": 0, "y": 0, "c": 0, PREDICTION_KEY: 0}
    assert cols.unknown_features == 0


def test_empty_events_array_is_accepted(lookup: Callable[[str, str], Profile | None]) -> None:
    """An empty events array is a valid request with nothing accepted."""
    parsed = parse(body([]), lookup)
    assert (parsed.accepted, parsed.columns.n, parsed.rejections) == (0, 0, [])
    assert parsed.columns.numeric["x"].shape == (0,)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b'{"model": "m",', b"\xff\xfe", b'{"a": 1} trailing'],
    ids=["empty", "text", "truncated", "not-utf8", "trailing"],
)
def test_non_json_is_400_invalid_json(
    raw: bytes, lookup: Callable[[str, str], Profile | None]
) -> None:
    """A body that is not JSON is refused with 400 invalid_json naming the body."""
    err = refused(raw, lookup)
    assert (err.status, err.reason, err.field) == (400, "invalid_json", "body")
    assert "not valid JSON" in err.message


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_invalid_json(
    token: str, lookup: Callable[[str, str], Profile | None]
) -> None:
    """NaN/Infinity tokens are refused as invalid JSON with a message that says why."""
    raw = body([event()]).replace(b'"latency_seconds":0.004', f'"latency_seconds":{token}'.encode())
    assert token.encode() in raw
    err = refused(raw, lookup)
    assert (err.status, err.reason) == (400, "invalid_json")
    assert "NaN and Infinity are not JSON numbers" in err.message


def test_overflowing_number_is_refused(lookup: Callable[[str, str], Profile | None]) -> None:
    """A number literal that overflows to infinity (1e400) is refused, never ingested as inf."""
    raw = body([event()]).replace(b'"latency_seconds":0.004', b'"latency_seconds":1e400')
    err = refused(raw, lookup)
    assert (err.status, err.reason) == (400, "invalid_json")
    assert "infinity" in err.message


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ([], "body", "must be a JSON object, got array"),
        ("text", "body", "must be a JSON object, got string"),
        ({"version": "1", "events": []}, "model", "is required"),
        ({"model": 1, "version": "1", "events": []}, "model", "must be a string, got number"),
        ({"model": "m", "events": []}, "version", "is required"),
        ({"model": "m", "version": 1, "events": []}, "version", "must be a string, got number"),
        ({"model": "m", "version": "1"}, "events", "is required"),
        ({"model": "m", "version": "1", "events": {}}, "events", "must be an array, got object"),
        ({"model": "m", "version": "1", "events": None}, "events", "must be an array, got null"),
    ],
)
def test_wrong_top_level_shape_is_400_invalid_body(
    document: object, field: str, words: str, lookup: Callable[[str, str], Profile | None]
) -> None:
    """A body of the wrong shape is refused with 400 invalid_body naming the field."""
    err = refused(orjson.dumps(document), lookup)
    assert (err.status, err.reason, err.field) == (400, "invalid_body", field)
    assert words in err.message
    assert str(err) == f"{field}: {err.message}"


def test_unknown_model_is_404_listing_known_models(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """An unknown model is refused with 404 unknown_model listing the served models."""
    err = refused(body([event()], model="nope"), lookup)
    assert (err.status, err.reason, err.field) == (404, "unknown_model", "model")
    assert "'nope'" in err.message
    assert "'m', 'other'" in err.message


def test_unknown_version_is_404_listing_known_versions(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """An unknown version of a known model is refused with 404 listing that model's versions."""
    err = refused(body([event()], version="7"), lookup)
    assert (err.status, err.reason, err.field) == (404, "unknown_model", "version")
    assert "'1', '2'" in err.message


def test_more_events_than_the_limit_is_413(lookup: Callable[[str, str], Profile | None]) -> None:
    """More events than max_events is refused with 413 too_many_events naming the limit."""
    err = refused(body([event(i) for i in range(4)]), lookup, max_events=3)
    assert (err.status, err.reason, err.field) == (413, "too_many_events", "events")
    assert "at most 3" in err.message


def test_hundred_thousand_event_batch_is_413(lookup: Callable[[str, str], Profile | None]) -> None:
    """A 100 000-element batch is refused under the default limits as too_many_events."""
    raw = body([0] * 100_000)
    err = refused(raw, lookup)
    assert (err.status, err.reason, err.field) == (413, "too_many_events", "events")
    assert "100000" in err.message


def test_oversized_body_is_413(lookup: Callable[[str, str], Profile | None]) -> None:
    """A body larger than max_body_bytes is refused with 413 too_large before decoding."""
    raw = body([event()])
    err = refused(raw, lookup, max_body_bytes=len(raw) - 1)
    assert (err.status, err.reason, err.field) == (413, "too_large", "body")
    assert str(len(raw) - 1) in err.message


def test_request_rejected_refuses_unknown_reason() -> None:
    """A request rejection reason outside the bounded set is a bug and raises."""
    with pytest.raises(ValueError, match="unknown request rejection reason"):
        RequestRejected(400, "made_up", "body", "x")


# --------------------------------------------------------------------------- per event


@pytest.mark.parametrize(
    ("fields", "path", "reason", "words"),
    [
        ({"id": ...}, "id", "missing_field", "is required"),
        ({"id": 5}, "id", "invalid_type", "must be a string, got number"),
        ({"id": ""}, "id", "invalid_value", "1 to 256 characters"),
        ({"id": "x" * 257}, "id", "invalid_value", "1 to 256 characters"),
        ({"timestamp": ...}, "timestamp", "missing_field", "is required"),
        ({"timestamp": None}, "timestamp", "missing_field", "is required"),
        ({"timestamp": "yesterday"}, "timestamp", "invalid_value", "RFC 3339"),
        ({"timestamp": "2026-11-25T09:00:00"}, "timestamp", "invalid_value", "with an offset"),
        ({"timestamp": "2026-11-25 09:00:00Z"}, "timestamp", "invalid_value", "RFC 3339"),
        (
            {"timestamp": "2026-02-30T09:00:00Z"},
            "timestamp",
            "invalid_value",
            "day is out of range",
        ),
        ({"timestamp": "2026-11-25T25:00:00Z"}, "timestamp", "invalid_value", "hour"),
        ({"timestamp": 1e300}, "timestamp", "invalid_value", "out of range"),
        ({"timestamp": True}, "timestamp", "invalid_type", "got boolean"),
        ({"timestamp": [1]}, "timestamp", "invalid_type", "got array"),
        ({"latency_seconds": ...}, "latency_seconds", "missing_field", "is required"),
        ({"latency_seconds": -0.001}, "latency_seconds", "invalid_value", ">= 0"),
        ({"latency_seconds": "0.1"}, "latency_seconds", "invalid_type", "got string"),
        ({"latency_seconds": False}, "latency_seconds", "invalid_type", "got boolean"),
        ({"status": "degraded"}, "status", "invalid_value", "must be one of ['ok', 'error']"),
        ({"status": 1}, "status", "invalid_type", "must be one of"),
        ({"features": ...}, "features", "missing_field", "is required"),
        ({"features": None}, "features", "invalid_type", "got null"),
        ({"features": [1, 2]}, "features", "invalid_type", "must be an object, got array"),
        ({"prediction": ...}, "prediction", "missing_field", "null when there is none"),
        ({"scores": [0.1]}, "scores", "invalid_type", "must be an object"),
        ({"scores": {"1": "high"}}, "scores.1", "invalid_type", "must be a number"),
        ({"scores": {"1": True}}, "scores.1", "invalid_type", "got boolean"),
        ({"trace_id": 12}, "trace_id", "invalid_type", "must be a string"),
        ({"attributes": "x"}, "attributes", "invalid_type", "must be an object"),
    ],
)
def test_invalid_event_is_rejected_naming_field_and_reason(
    fields: dict[str, Any],
    path: str,
    reason: str,
    words: str,
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """An invalid event is dropped with its index, field path and reason; the others are kept."""
    parsed = parse(body([event(0), event(1, **fields), event(2)]), lookup)
    assert parsed.accepted == 2
    assert list(parsed.columns.ids) == ["e0", "e2"]
    [rejection] = parsed.rejections
    wire = rejection.to_json()
    assert wire["index"] == 1
    assert wire["field"] == f"events[1].{path}"
    assert wire["reason"] == reason
    assert wire["error"].startswith(f"events[1].{path}: ")
    assert words in wire["error"]


@pytest.mark.parametrize("item", [None, 3, "event", [event()]])
def test_non_object_event_is_rejected(
    item: object, lookup: Callable[[str, str], Profile | None]
) -> None:
    """An event that is not an object is rejected as events[i] with invalid_type."""
    parsed = parse(body([event(0), item]), lookup)
    [rejection] = parsed.rejections
    assert (rejection.index, rejection.field, rejection.reason) == (1, "events[1]", "invalid_type")
    assert parsed.accepted == 1


def test_duplicate_id_rejects_the_later_event(lookup: Callable[[str, str], Profile | None]) -> None:
    """A repeated id keeps the first event and rejects the later one as duplicate_id."""
    parsed = parse(body([event(0), event(1), event(0, latency_seconds=9)]), lookup)
    assert list(parsed.columns.ids) == ["e0", "e1"]
    np.testing.assert_array_equal(parsed.columns.latency_seconds, [0.004, 0.004])
    [rejection] = parsed.rejections
    assert (rejection.index, rejection.field, rejection.reason) == (
        2,
        "events[2].id",
        "duplicate_id",
    )


def test_rejected_duplicate_does_not_block_a_later_valid_event(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """An event rejected for another reason does not reserve its id."""
    parsed = parse(body([event(0, latency_seconds=-1), event(0)]), lookup)
    assert parsed.accepted == 1
    assert [r.reason for r in parsed.rejections] == ["invalid_value"]


@pytest.mark.parametrize(
    ("sent", "normalised"),
    [
        ("2026-11-25T09:00:00.123Z", "2026-11-25T09:00:00.123Z"),
        ("2026-11-25T10:30:00+01:30", "2026-11-25T09:00:00.000000Z"),
        ("2026-11-25t09:00:00z", "2026-11-25T09:00:00.000000Z"),
        ("2026-11-25T09:00:00.123456789-00:00", "2026-11-25T09:00:00.123456Z"),
        (1795597200, "2026-11-25T09:00:00.000000Z"),
        (1795597200.5, "2026-11-25T09:00:00.500000Z"),
    ],
)
def test_timestamps_are_normalised_to_rfc3339_utc(
    sent: object, normalised: str, lookup: Callable[[str, str], Profile | None]
) -> None:
    """RFC 3339 strings with any offset and epoch seconds become an RFC 3339 UTC string."""
    parsed = parse(body([event(timestamp=sent)]), lookup)
    assert parsed.rejections == []
    assert parsed.accepted_events[0]["timestamp"] == normalised


def test_accepted_events_are_the_decoded_events_normalised(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """accepted_events hold every kept event's fields, with status filled in."""
    sent = event(0, status=..., trace_id="t-1", attributes={"region": "eu"}, scores={"a": 0.5})
    parsed = parse(body([sent, event(1, id=...)]), lookup)
    [kept] = parsed.accepted_events
    assert kept["status"] == "ok"
    assert kept["trace_id"] == "t-1"
    assert kept["attributes"] == {"region": "eu"}
    assert kept["features"] == sent["features"]
    assert kept["scores"] == {"a": 0.5}


# --------------------------------------------------------------------------- feature values


def test_missing_feature_values_are_counted(lookup: Callable[[str, str], Profile | None]) -> None:
    """Absent and null feature values become NaN / None and are counted as missing."""
    events = [
        event(0, features={"y": None, "c": None}, prediction=None),
        event(1, features={"x": 2.0, "y": 1.0, "c": "b"}),
    ]
    cols = parse(body(events), lookup).columns
    np.testing.assert_array_equal(cols.numeric["x"], [np.nan, 2.0])
    assert list(cols.categorical["c"]) == [None, "b"]
    assert isinstance(cols.prediction, np.ndarray)
    np.testing.assert_array_equal(cols.prediction, [np.nan, 0.7])
    assert dict(cols.missing) == {"x": 1, "y": 1, "c": 1, PREDICTION_KEY: 1}
    assert dict(cols.type_errors) == {"x": 0, "y": 0, "c": 0, PREDICTION_KEY: 0}


def test_wrong_numeric_types_are_counted_and_event_kept(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """A numeric feature of the wrong type is NaN, counted as a type error, warned once; kept."""
    events = [
        event(0, features={"x": "1.5", "y": 0.5, "c": "a"}),
        event(1, features={"x": True, "y": 0.5, "c": "a"}),
        event(2, features={"x": [1], "y": 0.5, "c": "a"}),
        event(3),
    ]
    parsed = parse(body(events), lookup)
    assert parsed.accepted == 4
    np.testing.assert_array_equal(parsed.columns.numeric["x"], [np.nan, np.nan, np.nan, 1.5])
    assert parsed.columns.type_errors["x"] == 3
    assert parsed.columns.missing["x"] == 0
    assert [w.to_json() for w in parsed.warnings] == [
        {
            "index": 0,
            "field": "events[0].features.x",
            "warning": "must be a finite number, got string; not observed",
        }
    ]


def test_categorical_values_use_category_keys(lookup: Callable[[str, str], Profile | None]) -> None:
    """Categorical values become category keys; fractional floats and containers are type errors."""
    values: list[object] = ["a", 1, 2.0, True, 1.5, {"k": 1}, None]
    events = [event(i, features={"x": 0.0, "y": 0.0, "c": v}) for i, v in enumerate(values)]
    parsed = parse(body(events), lookup)
    assert list(parsed.columns.categorical["c"]) == ["a", "1", "2", "true", None, None, None]
    assert parsed.columns.type_errors["c"] == 2
    assert parsed.columns.missing["c"] == 1
    [warning] = parsed.warnings
    assert (warning.index, warning.field) == (4, "events[4].features.c")


def test_unknown_features_are_counted_not_columns(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """Feature names outside the profile are counted and warned once per name, never columns."""
    events = [
        event(0, features={"x": 1.0, "new": 1, "other": "z"}),
        event(1, features={"x": 1.0, "new": 2}),
    ]
    parsed = parse(body(events), lookup)
    cols = parsed.columns
    assert cols.unknown_features == 3
    assert set(cols.numeric) == {"x", "y"}
    assert set(cols.categorical) == {"c"}
    assert sorted(w.field for w in parsed.warnings) == [
        "events[0].features.new",
        "events[0].features.other",
    ]


def test_warnings_are_capped_and_the_rest_counted(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """At most max_warnings warnings are returned; the others are counted in warnings_dropped."""
    features = {f"u{k}": k for k in range(10)}
    parsed = parse(body([event(0, features=features)]), lookup, max_warnings=4)
    assert len(parsed.warnings) == 4
    assert parsed.warnings_dropped == 6
    assert parsed.columns.unknown_features == 10


def test_warning_index_points_at_the_sent_event(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """A warning names the index the client sent even when earlier events were rejected."""
    events = [event(0, id=...), event(1, id=...), event(2, features={"x": "bad"})]
    parsed = parse(body(events), lookup)
    [warning] = parsed.warnings
    assert (warning.index, warning.field) == (2, "events[2].features.x")


def test_prediction_type_error_is_counted(lookup: Callable[[str, str], Profile | None]) -> None:
    """A prediction of the wrong type is counted under the prediction key and the event kept."""
    parsed = parse(body([event(0, prediction="cat"), event(1)]), lookup)
    assert parsed.accepted == 2
    assert parsed.columns.type_errors[PREDICTION_KEY] == 1
    assert parsed.warnings[0].field == "events[0].prediction"


def test_categorical_prediction_uses_category_keys() -> None:
    """A categorical prediction profile turns predictions into category keys."""
    prof = make_profile(
        numeric={"x": np.arange(10.0)}, prediction=["0", "1"], prediction_kind="categorical"
    )
    events = [event(i, features={"x": 1.0}, prediction=p) for i, p in enumerate([1, "0", None])]
    parsed = parse_events(body(events), lambda m, v: prof, LIMITS)
    assert list(parsed.columns.prediction or []) == ["1", "0", None]
    assert parsed.columns.missing[PREDICTION_KEY] == 1


def test_profile_without_prediction_has_no_prediction_column() -> None:
    """When the profile has no prediction section the prediction column is None and uncounted."""
    prof = make_profile(numeric={"x": np.arange(10.0)})
    parsed = parse_events(body([event(0, prediction="anything")]), lambda m, v: prof, LIMITS)
    assert parsed.accepted == 1
    assert parsed.columns.prediction is None
    assert PREDICTION_KEY not in parsed.columns.type_errors


# --------------------------------------------------------------------------- feedback


def feedback_body(labels: list[Any], **envelope: Any) -> bytes:
    """A feedback body for m/1."""
    return orjson.dumps({"model": "m", "version": "1", "labels": labels, **envelope})


def test_feedback_labels_take_the_numeric_prediction_kind(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """Numeric-prediction labels become floats; invalid items are rejected by index and field."""
    labels = [
        {"id": "a", "label": 1},
        {"id": "b", "label": "x"},
        {"id": "c"},
        {"label": 2},
        [1],
        {"id": "a", "label": 3},
        {"id": "d", "label": 2.5},
    ]
    parsed = parse_feedback(feedback_body(labels), lookup, LIMITS)
    assert parsed.ids == ["a", "d"]
    assert parsed.labels == [1.0, 2.5]
    assert [(r.field, r.reason) for r in parsed.rejections] == [
        ("labels[1].label", "invalid_type"),
        ("labels[2].label", "missing_field"),
        ("labels[3].id", "missing_field"),
        ("labels[4]", "invalid_type"),
        ("labels[5].id", "duplicate_id"),
    ]


def test_feedback_labels_take_the_categorical_prediction_kind() -> None:
    """Categorical-prediction labels become category keys, so 1, 1.0 and "1" are one class."""
    prof = make_profile(
        numeric={"x": np.arange(10.0)}, prediction=["0", "1"], prediction_kind="categorical"
    )
    labels = [
        {"id": "a", "label": 1},
        {"id": "b", "label": 1.0},
        {"id": "c", "label": True},
        {"id": "d", "label": 0.5},
    ]
    parsed = parse_feedback(feedback_body(labels), lambda m, v: prof, LIMITS)
    assert parsed.labels == ["1", "1", "true"]
    assert [(r.field, r.reason) for r in parsed.rejections] == [("labels[3].label", "invalid_type")]


def test_feedback_refuses_profile_without_prediction() -> None:
    """Labels for a model whose profile has no prediction section are refused as a whole."""
    prof = make_profile(numeric={"x": np.arange(10.0)})
    with pytest.raises(RequestRejected) as info:
        parse_feedback(feedback_body([]), lambda m, v: prof, LIMITS)
    assert (info.value.status, info.value.reason, info.value.field) == (
        400,
        "invalid_body",
        "model",
    )


def test_feedback_refuses_wrong_shape_and_too_many(
    lookup: Callable[[str, str], Profile | None],
) -> None:
    """A feedback body without a labels array, or with too many labels, is refused naming labels."""
    with pytest.raises(RequestRejected) as shape:
        parse_feedback(orjson.dumps({"model": "m", "version": "1"}), lookup, LIMITS)
    assert (shape.value.status, shape.value.field) == (400, "labels")
    many = feedback_body([{"id": str(i), "label": 1} for i in range(3)])
    with pytest.raises(RequestRejected) as count:
        parse_feedback(many, lookup, IngestLimits(max_events=2))
    assert (count.value.status, count.value.reason, count.value.field) == (
        413,
        "too_many_events",
        "labels",
    )
