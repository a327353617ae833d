"""The fast path of ``POST /v1/events`` against the careful path, which defines the contract."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._fast_path import AcceptedEvents, parse_valid_events
from sidecar.events import IngestLimits, ParsedEvents, RequestRejected, parse_events
from sidecar.events import _parse_carefully as parse_carefully
from sidecar.profile import Profile
from tests.support.profiles import make_profile

LIMITS = IngestLimits(max_id_length=8, max_warnings=3)
Lookup = Callable[[str, str], Profile | None]


def _profiles() -> dict[str, Profile]:
    rng = np.random.default_rng(11)
    numeric = {"x": rng.normal(size=300), "y": rng.uniform(size=300)}
    base = make_profile(
        numeric=numeric, categorical={"c": ["a", "b", "a"]}, prediction=rng.normal(size=300)
    )
    x, y, c = base.features
    return {
        # A categorical feature between two numeric ones: the fast path reorders its struct.
        "numeric": dataclasses.replace(base, features=(x, c, y)),
        "categorical": make_profile(
            numeric=numeric,
            categorical={"c": ["a", "b"]},
            prediction=["yes", "no", "no"],
            prediction_kind="categorical",
        ),
        "none": make_profile(numeric={"x": numeric["x"]}),
    }


PROFILES = _profiles()


def lookup_for(kind: str) -> Lookup:
    """Serves only m/1, with the profile of ``kind``."""
    return lambda model, version: PROFILES[kind] if (model, version) == ("m", "1") else None


# ----------------------------------------------------------------------------- strategies

MISSING = object()
"""Stands for a key left out of the event."""

_ids = st.sampled_from(["a", "b", "c", "é1", "😀", ""]) | st.text(min_size=1, max_size=10)
_plain_stamps = st.sampled_from(
    ["2026-11-25T09:00:00.123Z", "2026-11-25T09:00:00Z", "1999-01-01T23:59:59.1234567Z"]
)
_odd_stamps = st.sampled_from(
    [
        "2026-11-25T10:00:00+01:00",
        "2026-11-25t09:00:00z",
        "2026-11-25 09:00:00Z",
        "2026-02-30T09:00:00Z",
        "2026-11-25T23:59:60Z",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "yesterday",
    ]
)
_epochs = st.floats(-1e11, 1e11) | st.integers(-(10**13), 10**13) | st.sampled_from([1e300, -0.0])
_numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70)
_odd_values = st.sampled_from([None, True, False, "1.5", "a", [], {}, [1.0]])
_categories = st.sampled_from(["a", "b", "z", ""]) | st.text(max_size=4)


def _maybe(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes ``odd``, sometimes a left-out key."""
    return st.one_of(valid, valid, valid, odd, st.just(MISSING))


def _features(kind: str, clean: bool) -> st.SearchStrategy[dict[str, Any]]:
    names = PROFILES[kind].feature_names
    numeric = _numbers | st.none() if clean else _maybe(_numbers, _odd_values)
    category = _categories | st.none() if clean else _maybe(_categories, _odd_values | _numbers)
    values = st.fixed_dictionaries(
        {n: (category if n == "c" else numeric) for n in names},
        optional={} if clean else {"extra": _numbers, "z" * 70: st.just(1.0)},
    )
    return values.map(lambda d: {k: v for k, v in d.items() if v is not MISSING})


def _prediction(kind: str, clean: bool) -> st.SearchStrategy[Any]:
    valid: st.SearchStrategy[Any] = {
        "numeric": _numbers | st.none(),
        "categorical": st.sampled_from(["yes", "no", "maybe"]) | st.none(),
        "none": _numbers | _odd_values,
    }[kind]
    return valid if clean else _maybe(valid, _odd_values | _numbers)


@st.composite
def _event(draw: st.DrawFn, kind: str, clean: bool, index: int) -> dict[str, Any]:
    fields: dict[str, Any]
    if clean:
        fields = {
            "id": f"e{index}",
            "timestamp": draw(_plain_stamps | st.floats(0, 4e9) | st.integers(0, 4_000_000_000)),
            "latency_seconds": draw(st.floats(0, 1e6) | st.integers(0, 100)),
            "status": draw(st.sampled_from(["ok", "error", None, MISSING])),
            "features": draw(_features(kind, clean=True)),
            "prediction": draw(_prediction(kind, clean=True)),
        }
        if draw(st.booleans()):
            fields["scores"] = draw(st.dictionaries(st.text(max_size=3), _numbers, max_size=3))
            fields["trace_id"] = draw(st.none() | st.text(max_size=5))
            fields["attributes"] = draw(st.none() | st.dictionaries(st.text(max_size=3), _numbers))
    else:
        fields = {
            "id": draw(_maybe(_ids, st.none() | st.integers() | st.just("x" * 9))),
            "timestamp": draw(_maybe(_plain_stamps | _epochs, _odd_stamps | _odd_values)),
            "latency_seconds": draw(
                _maybe(
                    st.floats(0, 1e6) | st.just(1e9),
                    st.floats(-1, 0, exclude_max=True)
                    | st.floats(1e9, 1e300, exclude_min=True)
                    | _odd_values,
                )
            ),
            "status": draw(st.sampled_from(["ok", "error", None, "fine", 1, MISSING])),
            "features": draw(_maybe(_features(kind, clean=False), _odd_values)),
            "prediction": draw(_prediction(kind, clean=False)),
            "scores": draw(
                _maybe(st.none(), st.dictionaries(st.text(max_size=2), _numbers | _odd_values))
            ),
            "trace_id": draw(_maybe(st.none() | st.text(max_size=3), st.integers())),
            "attributes": draw(_maybe(st.none() | st.just({"r": 1}), st.integers() | st.text())),
        }
        if draw(st.integers(0, 9)) == 0:
            fields["unknown_key"] = draw(_numbers)
    return {k: v for k, v in fields.items() if v is not MISSING}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bool, bytes]:
    """``(profile kind, clean, body)``: a clean body holds only valid, plain events."""
    kind = draw(st.sampled_from(sorted(PROFILES)))
    clean = draw(st.booleans())
    n = draw(st.integers(1, 6))
    events = [draw(_event(kind, clean, i)) for i in range(n)]
    if not clean and draw(st.integers(0, 9)) == 0:
        events.append(draw(_odd_values))
    envelope = {"model": "m", "version": "1", "events": events}
    if draw(st.booleans()):
        envelope = {"events": events, "version": "1", "model": "m"}  # not the usual head
    # The standard encoder writes integers past 64 bits, which clients may send.
    return kind, clean, json.dumps(envelope, ensure_ascii=False, allow_nan=False).encode()


# ----------------------------------------------------------------------------- comparison


def assert_same(fast: ParsedEvents, careful: ParsedEvents) -> None:
    """Every part of two parses is equal: arrays NaN-aware, event objects byte for byte."""
    for name in ("model", "version", "received", "rejections", "warnings", "warnings_dropped"):
        assert getattr(fast, name) == getattr(careful, name), name
    assert fast.profile is careful.profile
    assert orjson.dumps(list(fast.accepted_events)) == orjson.dumps(list(careful.accepted_events))
    a, b = fast.columns, careful.columns
    assert (a.n, list(a.ids), a.unknown_features) == (b.n, list(b.ids), b.unknown_features)
    assert dict(a.status_counts) == dict(b.status_counts)
    assert dict(a.missing) == dict(b.missing)
    assert dict(a.type_errors) == dict(b.type_errors)
    np.testing.assert_array_equal(a.latency_seconds, b.latency_seconds, strict=True)
    assert list(a.numeric) == list(b.numeric)
    for name, column in a.numeric.items():
        np.testing.assert_array_equal(column, b.numeric[name], strict=True)
    assert {k: list(v) for k, v in a.categorical.items()} == {
        k: list(v) for k, v in b.categorical.items()
    }
    if isinstance(b.prediction, np.ndarray):
        assert isinstance(a.prediction, np.ndarray)
        np.testing.assert_array_equal(a.prediction, b.prediction, strict=True)
    else:
        assert a.prediction == b.prediction


_PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(bodies())
def test_fast_path_answers_exactly_as_the_careful_path(case: tuple[str, bool, bytes]) -> None:
    """Whenever the fast path answers, its parse equals the careful one; clean bodies get one."""
    kind, clean, raw = case
    lookup = lookup_for(kind)
    fast = parse_valid_events(raw, lookup, LIMITS)
    try:
        careful = parse_carefully(raw, lookup, LIMITS, None)
    except RequestRejected:
        assert fast is None
        return
    if clean:
        assert fast is not None
    if fast is not None:
        assert_same(fast, careful)


# ----------------------------------------------------------------------------- examples


def event(i: int, **fields: Any) -> dict[str, Any]:
    """A valid event of the ``numeric`` profile, with ``fields`` added or replaced."""
    return {
        "id": f"e{i}",
        "timestamp": "2026-11-25T09:00:00.123Z",
        "latency_seconds": 0.004,
        "features": {"x": 1.5, "y": 2, "c": "a"},
        "prediction": 0.7,
        **fields,
    }


def raw_body(events: list[Any]) -> bytes:
    """A body for m/1 holding ``events``."""
    return orjson.dumps({"model": "m", "version": "1", "events": events})


def test_a_valid_batch_takes_the_fast_path() -> None:
    """A body of valid events is answered by the fast path with the careful path's columns."""
    raw = raw_body([event(i, status="error" if i % 2 else "ok") for i in range(10)])
    fast = parse_valid_events(raw, lookup_for("numeric"), LIMITS)
    assert fast is not None
    assert fast.columns.status_counts == {"ok": 5, "error": 5}
    assert_same(fast, parse_carefully(raw, lookup_for("numeric"), LIMITS, None))


@pytest.mark.parametrize(
    "events",
    [
        [event(0, unknown_key=1)],
        [event(0), event(0)],
        [event(0, features={"x": 1.0, "y": 2.0, "c": "a", "extra": 1.0})],
        [event(0, features={"x": "1", "y": 2.0, "c": "a"})],
        [event(0, timestamp="2026-02-30T09:00:00Z")],
        [event(0, latency_seconds=-1)],
        [event(0, latency_seconds=1e10)],
        [],
    ],
    ids=[
        "unknown key",
        "repeated id",
        "unknown feature",
        "mistyped",
        "bad date",
        "latency",
        "latency too large",
        "empty",
    ],
)
def test_bodies_with_anything_to_report_take_the_careful_path(events: list[Any]) -> None:
    """Unknown keys, rejections, warnings and empty batches are left to the careful path."""
    assert parse_valid_events(raw_body(events), lookup_for("numeric"), LIMITS) is None


@pytest.mark.parametrize(
    "value",
    [b"1e400", b'"\xff"', b'"\xed\xa0\x80"', b"[" * 1025 + b"]" * 1025],
    ids=["overflow", "invalid utf-8", "utf-8 surrogate", "too deep"],
)
@pytest.mark.parametrize("key", ["unknown_key", "attributes", "trace_id"])
def test_json_that_orjson_refuses_is_refused_whatever_the_path(value: bytes, key: str) -> None:
    """A value the careful decoder refuses still refuses the body, even where msgspec skips it."""
    valid = raw_body([event(0)])
    raw = valid.replace(b'"prediction":0.7', b'"prediction":0.7,"' + key.encode() + b'":' + value)
    assert parse_valid_events(raw, lookup_for("numeric"), LIMITS) is None
    with pytest.raises(RequestRejected) as info:
        parse_events(raw, lookup_for("numeric"), LIMITS)
    assert info.value.reason == "invalid_json"


def test_accepted_events_are_decoded_when_read() -> None:
    """The fast path's accepted events equal the careful path's normalised event objects."""
    raw = raw_body([event(0, timestamp=1_700_000_000), event(1, status=None)])
    fast = parse_valid_events(raw, lookup_for("numeric"), LIMITS)
    assert fast is not None
    assert isinstance(fast.accepted_events, AcceptedEvents)
    careful = parse_carefully(raw, lookup_for("numeric"), LIMITS, None).accepted_events
    assert fast.accepted_events == careful
    assert len(fast.accepted_events) == 2
    assert fast.accepted_events[0]["timestamp"] == "2023-11-14T22:13:20.000000Z"
    assert fast.accepted_events[1]["status"] == "ok"
