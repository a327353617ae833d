"""The fast path of ``POST /v1/events``: a body in which every event is valid, decoded in C.

The whole body is decoded by msgspec into structs whose types are the event rules (a typed
``features`` struct per profile, forbidding unknown names), then checked with a few vectorised
tests, and the columns are gathered with one ``attrgetter`` tuple per event and one
``np.array`` call. It answers only for a body whose answer it can vouch for: whenever a body
holds anything the careful path (``sidecar.events``) would reject, warn about, count as a type
error or word differently, this returns None and the careful path, which defines the contract,
parses the body again. It must never accept a body the careful path refuses.

Unknown keys are forbidden at every level here, even where the wire format ignores them,
because msgspec skips an unknown value without the checks orjson makes (numbers that overflow,
invalid UTF-8); such bodies take the careful path.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Annotated, Any, Literal, overload

import msgspec
import numpy as np
import orjson
from msgspec.structs import astuple
from numpy.typing import NDArray

from sidecar._field_rules import MAX_LATENCY_SECONDS, EventChecker, FieldError, timestamp_valid
from sidecar._ingest_types import IngestLimits, ParsedEvents, ProfileLookup
from sidecar.columns import PREDICTION_KEY, EventColumns
from sidecar.profile import CategoricalProfile, Profile

FloatArray = NDArray[np.float64]

_Scalar = str | float | bool | None
_Shallow = _Scalar | list[_Scalar] | dict[str, _Scalar]
"""Free-form values (attributes, a prediction without a profile) the fast path takes.

Kept shallow on purpose: msgspec's nesting limit follows the interpreter's recursion limit and
orjson's is fixed, so deep values are left to the careful path, which words the refusal."""

_PLAIN_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z", re.ASCII)
"""The common timestamp form, which the careful path keeps as sent once it parses."""

_EPOCH_SAFE = (-62_135_596_800.0 + 86_400.0, 253_402_300_800.0 - 86_400.0)
"""Epoch seconds a day inside years 1 to 9999, so the careful path's conversion cannot fail."""


_HEAD = re.compile(rb'\{\s*"model"\s*:\s*"([ !#-\[\]-~]*)"\s*,\s*"version"\s*:\s*"([ !#-\[\]-~]*)"')
"""Plain ASCII ``model`` and ``version`` sent first (as ``sidecar.client`` does): one decode."""


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    version: str
    events: msgspec.Raw


class _Shape:
    """The decoders and getters for one profile's events, built once per profile shape.

    The features struct puts the numeric features first, so one ``astuple`` per event gives
    the numeric values as a prefix, in profile order.
    """

    def __init__(self, features: tuple[tuple[str, bool], ...], prediction: str, max_id: int):
        ordered = [name for name, cat in features if not cat] + [n for n, cat in features if cat]
        categorical = {name for name, cat in features if cat}
        fields = [f"f{i}" for i in range(len(ordered))]
        features_type = msgspec.defstruct(
            "Features",
            [
                (f, (str if n in categorical else float) | None, None)
                for f, n in zip(fields, ordered, strict=True)
            ],
            rename=dict(zip(fields, ordered, strict=True)),
            forbid_unknown_fields=True,
        )
        prediction_type: Any = {"numeric": float | None, "categorical": str | None}.get(
            prediction, _Shallow
        )
        event_type = msgspec.defstruct(
            "Event",
            [
                ("id", Annotated[str, msgspec.Meta(min_length=1, max_length=max_id)]),
                ("timestamp", str | float),
                ("latency_seconds", Annotated[float, msgspec.Meta(ge=0, le=MAX_LATENCY_SECONDS)]),
                ("features", features_type),
                ("prediction", prediction_type),
                ("status", Literal["ok", "error"] | None, None),
                ("scores", dict[str, float] | None, None),
                ("trace_id", str | None, None),
                ("attributes", dict[str, _Shallow] | None, None),
            ],
            forbid_unknown_fields=True,
        )
        body_type = msgspec.defstruct(
            "Body",
            [("model", str), ("version", str), ("events", list[event_type])],  # type: ignore[valid-type]
            forbid_unknown_fields=True,
        )
        self.events: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(list[event_type])  # type: ignore[valid-type]
        self.body: msgspec.json.Decoder[Any] = msgspec.json.Decoder(body_type)
        self.numeric = ordered[: len(ordered) - len(categorical)]
        self.categorical = [
            (name, len(self.numeric) + k) for k, name in enumerate(ordered[len(self.numeric) :])
        ]
        self.names = [name for name, _ in features]
        self.prediction = prediction


@lru_cache(maxsize=64)
def _shape(features: tuple[tuple[str, bool], ...], prediction: str, max_id: int) -> _Shape:
    return _Shape(features, prediction, max_id)


def _shape_of(profile: Profile, limits: IngestLimits) -> _Shape:
    features = tuple((f.name, isinstance(f, CategoricalProfile)) for f in profile.features)
    if profile.prediction is None:
        prediction = "none"
    elif isinstance(profile.prediction, CategoricalProfile):
        prediction = "categorical"
    else:
        prediction = "numeric"
    return _shape(features, prediction, limits.max_id_length)


_id = attrgetter("id")
_timestamp = attrgetter("timestamp")
_latency = attrgetter("latency_seconds")
_features = attrgetter("features")
_prediction = attrgetter("prediction")
_status = attrgetter("status")
_scores = attrgetter("scores")

# msgspec reports invalid UTF-8 inside a string it decodes as UnicodeDecodeError.
_DecodeErrors = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


def _decode(
    body: bytes, lookup: ProfileLookup, limits: IngestLimits
) -> tuple[str, str, Profile, _Shape, list[Any]] | None:
    """``(model, version, profile, shape, events)`` of a well-typed body, or None."""
    head = _HEAD.match(body)
    try:
        if head is not None:
            model, version = head[1].decode(), head[2].decode()
            profile = lookup(model, version)
            if profile is None:
                return None
            shape = _shape_of(profile, limits)
            decoded = shape.body.decode(body)
            if (decoded.model, decoded.version) != (model, version):
                return None  # a repeated key overrode the head; let the careful path judge
            return model, version, profile, shape, decoded.events
        envelope = msgspec.json.decode(body, type=_Envelope)
        profile = lookup(envelope.model, envelope.version)
        if profile is None:
            return None
        shape = _shape_of(profile, limits)
        return (
            envelope.model,
            envelope.version,
            profile,
            shape,
            shape.events.decode(envelope.events),
        )
    except _DecodeErrors:
        return None


def parse_valid_events(
    body: bytes, lookup: ProfileLookup, limits: IngestLimits
) -> ParsedEvents | None:
    """The parse of ``body`` when every event in it is valid and plain; None otherwise."""
    if len(body) > limits.max_body_bytes:
        return None
    decoded = _decode(body, lookup, limits)
    if decoded is None:
        return None
    model, version, profile, shape, events = decoded
    n = len(events)
    if n == 0 or n > limits.max_events:
        return None
    ids: list[str] = list(map(_id, events))
    if len(set(ids)) != n or not _timestamps_valid(list(map(_timestamp, events))):
        return None
    latencies = np.array(list(map(_latency, events)), dtype=np.float64)
    if not (np.isfinite(latencies).all() and _scores_finite(list(map(_scores, events)))):
        return None
    columns = _columns(shape, events, ids, latencies)
    if columns is None:
        return None
    return ParsedEvents(
        model=model,
        version=version,
        profile=profile,
        columns=columns,
        received=n,
        rejections=[],
        warnings=[],
        accepted_events=AcceptedEvents(body, limits),
        body=body,
    )


def _timestamps_valid(stamps: list[str | float]) -> bool:
    # A batch often repeats timestamps; each distinct one needs checking once.
    stamps = list(set(stamps))
    kinds = set(map(type, stamps))
    if kinds == {str}:
        if None not in map(_PLAIN_UTC.fullmatch, stamps):  # type: ignore[arg-type]
            try:
                deque(map(datetime.fromisoformat, stamps), maxlen=0)  # type: ignore[arg-type]
            except ValueError:
                return False
            return True
    elif kinds == {float}:
        epochs = np.array(stamps, dtype=np.float64)
        low, high = _EPOCH_SAFE
        if ((epochs > low) & (epochs < high)).all():
            return True
    return all(map(timestamp_valid, stamps))


def _scores_finite(scores: list[dict[str, float] | None]) -> bool:
    present = [s for s in scores if s] if scores.count(None) != len(scores) else []
    if not present:
        return True
    values = [v for s in present for v in s.values()]
    return bool(np.isfinite(np.array(values, dtype=np.float64)).all())


def _columns(
    shape: _Shape, events: list[Any], ids: list[str], latencies: FloatArray
) -> EventColumns | None:
    n = len(events)
    rows = list(map(astuple, map(_features, events)))
    numeric: dict[str, FloatArray] = {}
    missing: dict[str, int] = {}
    width = len(shape.numeric)
    if width:
        flat = rows if not shape.categorical else map(itemgetter(slice(0, width)), rows)
        # fromiter reads the floats straight into the array (None becomes NaN: a missing value).
        by_event = np.fromiter(chain.from_iterable(flat), np.float64, n * width)
        by_feature = np.ascontiguousarray(by_event.reshape(n, width).T)
        if np.isinf(by_feature).any():
            return None
        missing_n = np.isnan(by_feature).sum(axis=1).tolist()
        for j, name in enumerate(shape.numeric):
            numeric[name] = by_feature[j]
            missing[name] = missing_n[j]
    categorical: dict[str, list[str | None]] = {}
    for name, j in shape.categorical:
        column = list(map(itemgetter(j), rows))
        categorical[name] = column
        missing[name] = column.count(None)
    missing = {name: missing[name] for name in shape.names}
    prediction: FloatArray | list[str | None] | None = None
    if shape.prediction != "none":
        values = list(map(_prediction, events))
        if shape.prediction == "numeric":
            prediction = np.array(values, dtype=np.float64)
            if np.isinf(prediction).any():
                return None
            missing[PREDICTION_KEY] = int(np.isnan(prediction).sum())
        else:
            prediction = values
            missing[PREDICTION_KEY] = values.count(None)
    failed = list(map(_status, events)).count("error")
    return EventColumns(
        n=n,
        ids=ids,
        latency_seconds=latencies,
        status_counts={"ok": n - failed, "error": failed},
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        missing=missing,
        type_errors=dict.fromkeys(missing, 0),
        unknown_features=0,
    )


def normalised_events(
    body: bytes, limits: IngestLimits, skip: Collection[int] = ()
) -> list[dict[str, Any]]:
    """The events of ``body`` except those at ``skip``, normalised as the careful path keeps them.

    Raises ``FieldError`` when a kept event is invalid: the caller said it was accepted.
    """
    checker = EventChecker(limits)
    events = orjson.loads(body)["events"]
    if not skip:
        return [checker.check(e) for e in events]
    return [checker.check(e) for i, e in enumerate(events) if i not in skip]


class AcceptedEvents(Sequence[dict[str, Any]]):
    """The normalised event objects of a body the fast path accepted whole, decoded on first use.

    Only the prediction log needs them, so a sidecar without one never pays for them; when read,
    they are exactly what the careful path keeps (orjson's objects, normalised by its checker).
    """

    def __init__(self, body: bytes, limits: IngestLimits) -> None:
        self._body = body
        self._limits = limits
        self._events: list[dict[str, Any]] | None = None

    def _decoded(self) -> list[dict[str, Any]]:
        if self._events is None:
            try:
                self._events = normalised_events(self._body, self._limits)
            except FieldError as exc:  # pragma: no cover - the fast path checked every event
                raise AssertionError(f"fast path accepted an invalid event: {exc}") from exc
        return self._events

    def __len__(self) -> int:
        return len(self._decoded())

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | Sequence[dict[str, Any]]:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AcceptedEvents):
            other = other._decoded()
        return isinstance(other, list) and self._decoded() == other

    __hash__ = None  # type: ignore[assignment]
