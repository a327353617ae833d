"""Field rules for one item of a request: a prediction event or a feedback label.

A bad field raises ``FieldError``, which the parser turns into a ``Rejection`` of that item
while the rest of the request is kept. Feature values are not checked here: their typing
against the profile is done column by column in ``sidecar._columns_builder``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from sidecar._ingest_types import IngestLimits, Label
from sidecar._json import json_type
from sidecar.columns import STATUSES
from sidecar.profile import category_key

MAX_NAME = 64
MAX_LATENCY_SECONDS = 1e9
"""About 31.7 years: ``event.duration`` (nanoseconds, a 64-bit long) holds up to 9.2e9 s."""
"""Client-chosen names longer than this are cut in messages and field paths."""


class FieldError(Exception):
    """Raised inside the item pass; becomes a Rejection. Never leaves the parser."""

    def __init__(self, key: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason
        self.message = message


def short(name: str) -> str:
    """``name``, cut to ``MAX_NAME`` characters."""
    # Names come from the client; keep messages and field paths bounded.
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def normalised_timestamp(value: object) -> str:
    """The RFC 3339 UTC form of an event's timestamp; FieldError when it has none."""
    if isinstance(value, str):
        if _RFC3339.fullmatch(value) is None:
            raise FieldError(
                "timestamp",
                "invalid_value",
                f"must be an RFC 3339 date-time with an offset "
                f"(2026-11-25T09:00:00.123Z) or epoch seconds, got {value[:64]!r}",
            )
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise FieldError(
                "timestamp", "invalid_value", f"is not a valid date-time: {exc}"
            ) from exc
        if value[-1] == "Z" and value[10] == "T":
            return value  # already RFC 3339 UTC: the common case, kept as sent
        return _utc_text(parsed, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise FieldError("timestamp", "invalid_value", "epoch seconds must be finite")
        try:
            parsed = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise FieldError(
                "timestamp", "invalid_value", f"epoch seconds {value!r} are out of range"
            ) from exc
        return _utc_text(parsed, value)
    if value is None:
        raise FieldError("timestamp", "missing_field", "is required (RFC 3339 or epoch seconds)")
    raise FieldError(
        "timestamp",
        "invalid_type",
        f"must be an RFC 3339 string or epoch seconds, got {json_type(value)}",
    )


def timestamp_valid(value: object) -> bool:
    """Whether ``value`` is a timestamp this module accepts (for the fast path's odd cases)."""
    try:
        normalised_timestamp(value)
    except FieldError:
        return False
    return True


def _utc_text(moment: datetime, original: object) -> str:
    try:
        utc = moment.astimezone(UTC)
    except OverflowError as exc:
        raise FieldError(
            "timestamp", "invalid_value", f"{original!r} is out of range in UTC"
        ) from exc
    return utc.isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def _latency(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise FieldError(
                "latency_seconds", "invalid_value", f"must be finite and >= 0, got {value!r}"
            )
        if value > MAX_LATENCY_SECONDS:
            raise FieldError(
                "latency_seconds",
                "invalid_value",
                f"must be at most {MAX_LATENCY_SECONDS:.0e} seconds (shipped as a 64-bit count "
                f"of nanoseconds), got {value!r}",
            )
        return float(value)
    if value is None:
        raise FieldError("latency_seconds", "missing_field", "is required")
    raise FieldError("latency_seconds", "invalid_type", f"must be a number, got {json_type(value)}")


def _check_optional(event: dict[str, Any]) -> None:
    scores = event.get("scores")
    if scores is not None:
        if not isinstance(scores, dict):
            raise FieldError(
                "scores", "invalid_type", f"must be an object, got {json_type(scores)}"
            )
        for key, score in scores.items():
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise FieldError(
                    f"scores.{short(key)}",
                    "invalid_type",
                    f"must be a number, got {json_type(score)}",
                )
            if not math.isfinite(score):
                raise FieldError(f"scores.{short(key)}", "invalid_value", "must be finite")
    trace_id = event.get("trace_id")
    if trace_id is not None and not isinstance(trace_id, str):
        raise FieldError("trace_id", "invalid_type", f"must be a string, got {json_type(trace_id)}")
    attributes = event.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise FieldError(
            "attributes", "invalid_type", f"must be an object, got {json_type(attributes)}"
        )


class EventChecker:
    """The one per-event pass: validates envelope fields and normalises the event in place."""

    def __init__(self, limits: IngestLimits) -> None:
        self.max_id_length = limits.max_id_length
        self.seen: set[str] = set()

    def check(self, event: object) -> dict[str, Any]:
        """The event, with ``timestamp``, ``latency_seconds`` and ``status`` normalised."""
        if not isinstance(event, dict):
            raise FieldError("", "invalid_type", f"must be an object, got {json_type(event)}")
        event_id = self._id(event.get("id"))
        timestamp = normalised_timestamp(event.get("timestamp"))
        latency = _latency(event.get("latency_seconds"))
        status = event.get("status")
        if status is None:
            status = "ok"
        elif status not in STATUSES:
            reason = "invalid_value" if isinstance(status, str) else "invalid_type"
            raise FieldError("status", reason, f"must be one of {list(STATUSES)}, got {status!r}")
        features = event.get("features")
        if not isinstance(features, dict):
            if features is None and "features" not in event:
                raise FieldError("features", "missing_field", "is required (an object)")
            raise FieldError(
                "features", "invalid_type", f"must be an object, got {json_type(features)}"
            )
        if "prediction" not in event:
            raise FieldError("prediction", "missing_field", "is required (null when there is none)")
        _check_optional(event)
        if event_id in self.seen:
            raise FieldError("id", "duplicate_id", f"{event_id!r} appears earlier in this request")
        self.seen.add(event_id)
        event["timestamp"] = timestamp
        event["latency_seconds"] = latency
        event["status"] = status
        return event

    def _id(self, value: object) -> str:
        if isinstance(value, str):
            if not value or len(value) > self.max_id_length:
                raise FieldError(
                    "id",
                    "invalid_value",
                    f"must be 1 to {self.max_id_length} characters, got {len(value)}",
                )
            return value
        if value is None:
            raise FieldError("id", "missing_field", "is required (a unique string)")
        raise FieldError("id", "invalid_type", f"must be a string, got {json_type(value)}")


def label(item: object, categorical: bool, limits: IngestLimits) -> tuple[str, Label]:
    """``(id, label)`` of one feedback item; the label takes the prediction's kind."""
    if not isinstance(item, dict):
        raise FieldError("", "invalid_type", f"must be an object, got {json_type(item)}")
    label_id = item.get("id")
    if not isinstance(label_id, str):
        reason = "missing_field" if label_id is None else "invalid_type"
        raise FieldError("id", reason, f"must be a string, got {json_type(label_id)}")
    if not label_id or len(label_id) > limits.max_id_length:
        raise FieldError("id", "invalid_value", f"must be 1 to {limits.max_id_length} characters")
    value = item.get("label")
    if value is None:
        raise FieldError("label", "missing_field", "is required (a number, string or boolean)")
    if categorical:
        try:
            key = category_key(value)
        except TypeError as exc:
            raise FieldError(
                "label",
                "invalid_type",
                f"must be a string, boolean or integer category, got {json_type(value)}",
            ) from exc
        if key is None:  # pragma: no cover - None was handled above
            raise FieldError("label", "missing_field", "is required")
        return label_id, key
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FieldError(
            "label",
            "invalid_type",
            f"must be a number for a numeric prediction, got {json_type(value)}",
        )
    if not math.isfinite(value):
        raise FieldError("label", "invalid_value", "must be finite")
    return label_id, float(value)
