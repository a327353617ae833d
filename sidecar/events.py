"""Parse and validate ``POST /v1/events`` and ``POST /v1/feedback`` bodies into columns.

This is the ingest hot path: the per-event Python work is one validation pass over the decoded
events, and every numpy column is built once from a list. Nothing here does I/O or keeps state
between requests. A body that cannot be used at all raises ``RequestRejected`` (a 4xx for the
whole request); an invalid event becomes a ``Rejection`` and the other events are kept. The
wire format is documented field by field in ``docs/wire-format.md``; keep the two in step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from sidecar.columns import PREDICTION_KEY, STATUSES, EventColumns
from sidecar.counters import REQUEST_REJECT_REASONS
from sidecar.errors import EventError
from sidecar.profile import CategoricalProfile, FeatureProfile, Profile, category_key

FloatArray = NDArray[np.float64]

ProfileLookup = Callable[[str, str], Profile | None]
"""``lookup(model, version)``: the profile of a served model version, or None."""

Catalogue = Callable[[], Mapping[str, Sequence[str]]]
"""``catalogue()``: every served model and its versions, used to word 404 answers."""

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Bounds on one ingest request, so no client can make the sidecar's memory grow."""

    max_body_bytes: int = 8 * MiB
    max_events: int = 10_000
    max_id_length: int = 256
    max_warnings: int = 100


class RequestRejected(EventError):  # noqa: N818 - the name the ingest contract uses
    """The whole request is refused with HTTP ``status``; ``reason`` is a bounded code.

    ``reason`` is one of ``sidecar.counters.REQUEST_REJECT_REASONS``, ``field`` names the part
    of the request at fault (``events``, ``model``, ``Content-Type`` …) and ``message`` says
    what is wrong in words.
    """

    def __init__(self, status: int, reason: str, field: str, message: str) -> None:
        if reason not in REQUEST_REJECT_REASONS:
            raise ValueError(f"unknown request rejection reason {reason!r}")
        super().__init__(field, message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Rejection:
    """One dropped event (or label): where it sits, which field is wrong, and why."""

    index: int
    field: str
    reason: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"index", "field", "reason", "error"}``."""
        return {
            "index": self.index,
            "field": self.field,
            "reason": self.reason,
            "error": f"{self.field}: {self.message}",
        }


@dataclass(frozen=True, slots=True)
class EventWarning:
    """A problem in a kept event (a value not observed, an unknown feature name)."""

    index: int
    field: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"index", "field", "warning"}``."""
        return {"index": self.index, "field": self.field, "warning": self.message}


@dataclass(frozen=True, slots=True, eq=False)
class ParsedEvents:
    """The result of one ``POST /v1/events``: columns for the engine plus the answer's parts.

    ``received`` counts the events in the request, ``accepted`` those kept (``columns.n``).
    ``accepted_events`` are the decoded event objects of the kept events, with ``timestamp``
    normalised to an RFC 3339 UTC string and ``status`` filled in, for the log shipper.
    """

    model: str
    version: str
    profile: Profile
    columns: EventColumns
    received: int
    rejections: list[Rejection]
    warnings: list[EventWarning]
    accepted_events: list[dict[str, Any]]
    warnings_dropped: int = 0

    @property
    def accepted(self) -> int:
        """Number of events kept."""
        return self.columns.n


Label = float | str


@dataclass(frozen=True, slots=True, eq=False)
class ParsedFeedback:
    """The result of one ``POST /v1/feedback``: valid labels, converted to the prediction's kind.

    Numeric predictions get float labels; categorical ones get category keys
    (``sidecar.profile.category_key``), so labels compare with remembered predictions directly.
    """

    model: str
    version: str
    profile: Profile
    ids: list[str]
    labels: list[Label]
    received: int
    rejections: list[Rejection] = field(default_factory=list)


# --------------------------------------------------------------------------- request level


def _decode(body: bytes, limits: IngestLimits) -> object:
    if len(body) > limits.max_body_bytes:
        raise RequestRejected(
            413,
            "too_large",
            "body",
            f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes} bytes",
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(400, "invalid_json", "body", _json_error(exc)) from exc


def _json_error(exc: orjson.JSONDecodeError) -> str:
    # orjson's own wording for NaN/Infinity is "unexpected character"; say what is really wrong.
    doc = exc.doc if isinstance(exc.doc, str) else ""
    if doc[exc.pos : exc.pos + 8].startswith(("NaN", "Infinity")):
        return (
            f"not valid JSON at char {exc.pos}: NaN and Infinity are not JSON numbers; "
            "send null for a missing value"
        )
    return f"not valid JSON: {exc.msg} (char {exc.pos})"


def _envelope(
    obj: object, items_key: str, lookup: ProfileLookup, catalogue: Catalogue | None
) -> tuple[str, str, Profile, list[Any]]:
    if not isinstance(obj, dict):
        raise RequestRejected(
            400, "invalid_body", "body", f"must be a JSON object, got {_json_type(obj)}"
        )
    for key in ("model", "version"):
        if key not in obj:
            raise RequestRejected(400, "invalid_body", key, "is required")
        if not isinstance(obj[key], str):
            raise RequestRejected(
                400, "invalid_body", key, f"must be a string, got {_json_type(obj[key])}"
            )
    if items_key not in obj:
        raise RequestRejected(400, "invalid_body", items_key, "is required")
    items = obj[items_key]
    if not isinstance(items, list):
        raise RequestRejected(
            400, "invalid_body", items_key, f"must be an array, got {_json_type(items)}"
        )
    model, version = obj["model"], obj["version"]
    profile = lookup(model, version)
    if profile is None:
        raise _unknown_model(model, version, catalogue)
    return model, version, profile, items


def _unknown_model(model: str, version: str, catalogue: Catalogue | None) -> RequestRejected:
    known = dict(catalogue()) if catalogue is not None else {}
    if model in known:
        versions = ", ".join(repr(v) for v in sorted(known[model])) or "none"
        return RequestRejected(
            404,
            "unknown_model",
            "version",
            f"model {model!r} has no version {version!r}; known versions: {versions}",
        )
    models = ", ".join(repr(m) for m in sorted(known)) or "none"
    return RequestRejected(
        404, "unknown_model", "model", f"unknown model {model!r}; known models: {models}"
    )


def _check_count(items: list[Any], items_key: str, limits: IngestLimits) -> None:
    if len(items) > limits.max_events:
        raise RequestRejected(
            413,
            "too_many_events",
            items_key,
            f"holds {len(items)} items; at most {limits.max_events} are accepted per request",
        )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --------------------------------------------------------------------------- event level


class _FieldError(Exception):
    """Raised inside the event pass; becomes a Rejection. Never leaves this module."""

    def __init__(self, key: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason
        self.message = message


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _timestamp(value: object) -> str:
    """The RFC 3339 UTC form of an event's timestamp; _FieldError when it has none."""
    if isinstance(value, str):
        if _RFC3339.fullmatch(value) is None:
            raise _FieldError(
                "timestamp",
                "invalid_value",
                f"must be an RFC 3339 date-time with an offset "
                f"(2026-11-25T09:00:00.123Z) or epoch seconds, got {value[:64]!r}",
            )
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise _FieldError(
                "timestamp", "invalid_value", f"is not a valid date-time: {exc}"
            ) from exc
        if value[-1] == "Z" and value[10] == "T":
            return value  # already RFC 3339 UTC: the common case, kept as sent
        return _utc_text(parsed, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _FieldError("timestamp", "invalid_value", "epoch seconds must be finite")
        try:
            parsed = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise _FieldError(
                "timestamp", "invalid_value", f"epoch seconds {value!r} are out of range"
            ) from exc
        return _utc_text(parsed, value)
    if value is None:
        raise _FieldError("timestamp", "missing_field", "is required (RFC 3339 or epoch seconds)")
    raise _FieldError(
        "timestamp",
        "invalid_type",
        f"must be an RFC 3339 string or epoch seconds, got {_json_type(value)}",
    )


def _utc_text(moment: datetime, original: object) -> str:
    try:
        utc = moment.astimezone(UTC)
    except OverflowError as exc:
        raise _FieldError(
            "timestamp", "invalid_value", f"{original!r} is out of range in UTC"
        ) from exc
    return utc.isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def _latency(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise _FieldError(
                "latency_seconds", "invalid_value", f"must be finite and >= 0, got {value!r}"
            )
        return float(value)
    if value is None:
        raise _FieldError("latency_seconds", "missing_field", "is required")
    raise _FieldError(
        "latency_seconds", "invalid_type", f"must be a number, got {_json_type(value)}"
    )


def _check_optional(event: dict[str, Any]) -> None:
    scores = event.get("scores")
    if scores is not None:
        if not isinstance(scores, dict):
            raise _FieldError(
                "scores", "invalid_type", f"must be an object, got {_json_type(scores)}"
            )
        for key, score in scores.items():
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise _FieldError(
                    f"scores.{_short(key)}",
                    "invalid_type",
                    f"must be a number, got {_json_type(score)}",
                )
            if not math.isfinite(score):
                raise _FieldError(f"scores.{_short(key)}", "invalid_value", "must be finite")
    trace_id = event.get("trace_id")
    if trace_id is not None and not isinstance(trace_id, str):
        raise _FieldError(
            "trace_id", "invalid_type", f"must be a string, got {_json_type(trace_id)}"
        )
    attributes = event.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise _FieldError(
            "attributes", "invalid_type", f"must be an object, got {_json_type(attributes)}"
        )


class _EventChecker:
    """The one per-event pass: validates envelope fields and normalises the event in place."""

    def __init__(self, limits: IngestLimits) -> None:
        self.max_id_length = limits.max_id_length
        self.seen: set[str] = set()

    def check(self, event: object) -> dict[str, Any]:
        if not isinstance(event, dict):
            raise _FieldError("", "invalid_type", f"must be an object, got {_json_type(event)}")
        event_id = self._id(event.get("id"))
        timestamp = _timestamp(event.get("timestamp"))
        latency = _latency(event.get("latency_seconds"))
        status = event.get("status")
        if status is None:
            status = "ok"
        elif status not in STATUSES:
            reason = "invalid_value" if isinstance(status, str) else "invalid_type"
            raise _FieldError("status", reason, f"must be one of {list(STATUSES)}, got {status!r}")
        features = event.get("features")
        if not isinstance(features, dict):
            if features is None and "features" not in event:
                raise _FieldError("features", "missing_field", "is required (an object)")
            raise _FieldError(
                "features", "invalid_type", f"must be an object, got {_json_type(features)}"
            )
        if "prediction" not in event:
            raise _FieldError(
                "prediction", "missing_field", "is required (null when there is none)"
            )
        _check_optional(event)
        if event_id in self.seen:
            raise _FieldError("id", "duplicate_id", f"{event_id!r} appears earlier in this request")
        self.seen.add(event_id)
        event["timestamp"] = timestamp
        event["latency_seconds"] = latency
        event["status"] = status
        return event

    def _id(self, value: object) -> str:
        if isinstance(value, str):
            if not value or len(value) > self.max_id_length:
                raise _FieldError(
                    "id",
                    "invalid_value",
                    f"must be 1 to {self.max_id_length} characters, got {len(value)}",
                )
            return value
        if value is None:
            raise _FieldError("id", "missing_field", "is required (a unique string)")
        raise _FieldError("id", "invalid_type", f"must be a string, got {_json_type(value)}")


# --------------------------------------------------------------------------- columns


class _Warnings:
    """At most ``limit`` warnings, one per distinct name; the rest are only counted.

    Columns hold the kept events only, so ``positions[k]`` maps kept event ``k`` back to the
    index the client sent, which is what a warning must point at.
    """

    def __init__(self, limit: int, positions: list[int]) -> None:
        self.limit = limit
        self.positions = positions
        self.items: list[EventWarning] = []
        self.seen: set[str] = set()
        self.dropped = 0

    def add(self, name: str, kept: int, path: str, message: str) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        if len(self.items) < self.limit:
            index = self.positions[kept]
            self.items.append(EventWarning(index, f"events[{index}].{path}", message))
        else:
            self.dropped += 1


def _short(name: str) -> str:
    # Names come from the client; keep messages and field paths bounded.
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"


_MAX_NAME = 64
_NUMBER_TYPES = frozenset({int, float})


def _numeric_column(values: list[Any], path: str, warn: _Warnings) -> tuple[FloatArray, int, int]:
    """The float64 column of ``values``, with its missing and type-error counts."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        column = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(column)
        if not bad.any():
            return column, 0, 0
        # orjson refuses non-finite literals; this keeps inf out of the bins should that change.
        column[bad] = np.nan
        first = int(np.argmax(bad))
        warn.add(path, first, path, "must be a finite number; not observed")
        return column, 0, int(bad.sum())
    out = np.empty(len(values), dtype=np.float64)
    missing = errors = 0
    for i, value in enumerate(values):
        kind = type(value)
        if kind is float or kind is int:
            number = float(value)
            if math.isfinite(number):
                out[i] = number
                continue
        out[i] = np.nan
        if value is None:
            missing += 1
        else:
            errors += 1
            warn.add(
                path,
                i,
                path,
                f"must be a finite number, got {_json_type(value)}; not observed",
            )
    return out, missing, errors


def _categorical_column(
    values: list[Any], path: str, warn: _Warnings
) -> tuple[list[str | None], int, int]:
    """The category keys of ``values``, with their missing and type-error counts."""
    if set(map(type, values)) == {str}:
        return values, 0, 0
    out: list[str | None] = []
    append = out.append
    missing = errors = 0
    for i, value in enumerate(values):
        try:
            key = category_key(value)
        except TypeError:
            errors += 1
            warn.add(
                path,
                i,
                path,
                f"must be a string, boolean or integer, got {_json_type(value)}; not observed",
            )
            append(None)
            continue
        if key is None:
            missing += 1
        append(key)
    return out, missing, errors


def _build_columns(
    profile: Profile,
    events: list[dict[str, Any]],
    ids: list[str],
    latencies: list[float],
    warn: _Warnings,
) -> EventColumns:
    features = [e["features"] for e in events]
    numeric: dict[str, FloatArray] = {}
    categorical: dict[str, Sequence[str | None]] = {}
    missing: dict[str, int] = {}
    type_errors: dict[str, int] = {}

    def column(feat: FeatureProfile, values: list[Any], path: str) -> FloatArray | list[str | None]:
        col: FloatArray | list[str | None]
        if isinstance(feat, CategoricalProfile):
            col, missing_n, errors_n = _categorical_column(values, path, warn)
        else:
            col, missing_n, errors_n = _numeric_column(values, path, warn)
        key = PREDICTION_KEY if path == "prediction" else feat.name
        missing[key] = missing_n
        type_errors[key] = errors_n
        return col

    for feat in profile.features:
        name = feat.name
        # map over dict.get runs in C: this is the innermost loop of the parser.
        values = list(map(dict.get, features, repeat(name)))
        col = column(feat, values, f"features.{_short(name)}")
        if isinstance(col, list):
            categorical[name] = col
        else:
            numeric[name] = col

    prediction: FloatArray | list[str | None] | None = None
    if profile.prediction is not None:
        prediction = column(profile.prediction, [e["prediction"] for e in events], "prediction")

    known = frozenset(profile.feature_names)
    unknown = 0
    for i, feats in enumerate(features):
        if not known.issuperset(feats):
            for name in feats.keys() - known:
                unknown += 1
                warn.add(
                    f"unknown:{name}",
                    i,
                    f"features.{_short(name)}",
                    f"feature {_short(name)!r} is not in the profile of "
                    f"{profile.model}/{profile.version}; counted, not monitored",
                )

    status_counts = dict.fromkeys(STATUSES, 0)
    for e in events:
        status_counts[e["status"]] += 1

    return EventColumns(
        n=len(events),
        ids=ids,
        latency_seconds=np.asarray(latencies, dtype=np.float64),
        status_counts=status_counts,
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        missing=missing,
        type_errors=type_errors,
        unknown_features=unknown,
    )


# --------------------------------------------------------------------------- public


def parse_events(
    body: bytes,
    lookup: ProfileLookup,
    limits: IngestLimits,
    *,
    catalogue: Catalogue | None = None,
) -> ParsedEvents:
    """Decode and validate a ``POST /v1/events`` body against the model version's profile.

    Raises ``RequestRejected`` when the body as a whole cannot be used (not JSON, wrong shape,
    unknown model or version, too many events). Otherwise every valid event is kept, every
    invalid one becomes a ``Rejection``, and feature values of the wrong type are counted in
    ``type_errors`` (and warned about) while the event itself is kept.
    """
    obj = _decode(body, limits)
    model, version, profile, raw_events = _envelope(obj, "events", lookup, catalogue)
    _check_count(raw_events, "events", limits)

    checker = _EventChecker(limits)
    kept: list[dict[str, Any]] = []
    ids: list[str] = []
    latencies: list[float] = []
    rejections: list[Rejection] = []
    positions: list[int] = []
    for index, raw in enumerate(raw_events):
        try:
            event = checker.check(raw)
        except _FieldError as bad:
            path = f"events[{index}].{bad.key}" if bad.key else f"events[{index}]"
            rejections.append(Rejection(index, path, bad.reason, bad.message))
            continue
        kept.append(event)
        ids.append(event["id"])
        latencies.append(event["latency_seconds"])
        positions.append(index)

    warn = _Warnings(limits.max_warnings, positions)
    columns = _build_columns(profile, kept, ids, latencies, warn)
    return ParsedEvents(
        model=model,
        version=version,
        profile=profile,
        columns=columns,
        received=len(raw_events),
        rejections=rejections,
        warnings=warn.items,
        accepted_events=kept,
        warnings_dropped=warn.dropped,
    )


def parse_feedback(
    body: bytes,
    lookup: ProfileLookup,
    limits: IngestLimits,
    *,
    catalogue: Catalogue | None = None,
) -> ParsedFeedback:
    """Decode and validate a ``POST /v1/feedback`` body; labels take the prediction's kind.

    Raises ``RequestRejected`` like ``parse_events``, and also when the profile has no
    prediction section (there is nothing to score labels against).
    """
    obj = _decode(body, limits)
    model, version, profile, raw_labels = _envelope(obj, "labels", lookup, catalogue)
    _check_count(raw_labels, "labels", limits)
    prediction = profile.prediction
    if prediction is None:
        raise RequestRejected(
            400,
            "invalid_body",
            "model",
            f"the profile of {model}/{version} has no prediction section, "
            "so labels cannot be scored",
        )
    categorical = isinstance(prediction, CategoricalProfile)
    ids: list[str] = []
    labels: list[Label] = []
    rejections: list[Rejection] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_labels):
        try:
            label_id, label = _label(item, categorical, limits)
            if label_id in seen:
                raise _FieldError(
                    "id", "duplicate_id", f"{label_id!r} appears earlier in this request"
                )
        except _FieldError as bad:
            path = f"labels[{index}].{bad.key}" if bad.key else f"labels[{index}]"
            rejections.append(Rejection(index, path, bad.reason, bad.message))
            continue
        seen.add(label_id)
        ids.append(label_id)
        labels.append(label)
    return ParsedFeedback(
        model=model,
        version=version,
        profile=profile,
        ids=ids,
        labels=labels,
        received=len(raw_labels),
        rejections=rejections,
    )


def _label(item: object, categorical: bool, limits: IngestLimits) -> tuple[str, Label]:
    if not isinstance(item, dict):
        raise _FieldError("", "invalid_type", f"must be an object, got {_json_type(item)}")
    label_id = item.get("id")
    if not isinstance(label_id, str):
        reason = "missing_field" if label_id is None else "invalid_type"
        raise _FieldError("id", reason, f"must be a string, got {_json_type(label_id)}")
    if not label_id or len(label_id) > limits.max_id_length:
        raise _FieldError("id", "invalid_value", f"must be 1 to {limits.max_id_length} characters")
    value = item.get("label")
    if value is None:
        raise _FieldError("label", "missing_field", "is required (a number, string or boolean)")
    if categorical:
        try:
            key = category_key(value)
        except TypeError as exc:
            raise _FieldError(
                "label",
                "invalid_type",
                f"must be a string, boolean or integer category, got {_json_type(value)}",
            ) from exc
        if key is None:  # pragma: no cover - None was handled above
            raise _FieldError("label", "missing_field", "is required")
        return label_id, key
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _FieldError(
            "label",
            "invalid_type",
            f"must be a number for a numeric prediction, got {_json_type(value)}",
        )
    if not math.isfinite(value):
        raise _FieldError("label", "invalid_value", "must be finite")
    return label_id, float(value)
