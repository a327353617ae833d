"""Parse and validate ``POST /v1/events`` and ``POST /v1/feedback`` bodies into columns.

This is the ingest hot path. A body whose events are all valid takes the fast path
(``_fast_path``: typed decoding in C, vectorised checks); any other body takes the careful path,
whose per-event Python work is one validation pass over the decoded events, and whose numpy
columns are each built once from a list. The careful path defines the answers; the fast path
only answers when it gives the same. Nothing here does I/O or keeps state between requests.
A body that cannot be used at all raises ``RequestRejected`` (a 4xx for the
whole request); an invalid event becomes a ``Rejection`` and the other events are kept. The
wire format is documented field by field in ``docs/wire-format.md``; keep the two in step.

This module is the parser's public door. Behind it: ``_ingest_types`` (limits, errors,
results), ``_request_body`` (size, JSON and envelope of the whole request), ``_field_rules``
(one event's or one label's fields) and ``_columns_builder`` (feature typing and columns).
"""

from __future__ import annotations

from typing import Any

from sidecar._columns_builder import Warnings, build_columns
from sidecar._fast_path import parse_valid_events
from sidecar._field_rules import EventChecker, FieldError, label
from sidecar._ingest_types import (
    Catalogue,
    EventWarning,
    IngestLimits,
    Label,
    ParsedEvents,
    ParsedFeedback,
    ProfileLookup,
    Rejection,
    RequestRejected,
)
from sidecar._request_body import check_count, decode, envelope
from sidecar.profile import CategoricalProfile

__all__ = [
    "Catalogue",
    "EventWarning",
    "IngestLimits",
    "Label",
    "ParsedEvents",
    "ParsedFeedback",
    "ProfileLookup",
    "Rejection",
    "RequestRejected",
    "parse_events",
    "parse_feedback",
]


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
    ``type_errors`` (and warned about) while the event itself is kept. A body whose events are
    all valid and plain is answered by ``sidecar._fast_path`` with the very same result.
    """
    fast = parse_valid_events(body, lookup, limits)
    if fast is not None:
        return fast
    return _parse_carefully(body, lookup, limits, catalogue)


def _parse_carefully(
    body: bytes, lookup: ProfileLookup, limits: IngestLimits, catalogue: Catalogue | None
) -> ParsedEvents:
    """The parse that defines the contract: one event at a time, every problem worded."""
    obj = decode(body, limits)
    model, version, profile, raw_events = envelope(obj, "events", lookup, catalogue)
    check_count(raw_events, "events", limits)

    checker = EventChecker(limits)
    kept: list[dict[str, Any]] = []
    ids: list[str] = []
    latencies: list[float] = []
    rejections: list[Rejection] = []
    positions: list[int] = []
    for index, raw in enumerate(raw_events):
        try:
            event = checker.check(raw)
        except FieldError as bad:
            path = f"events[{index}].{bad.key}" if bad.key else f"events[{index}]"
            rejections.append(Rejection(index, path, bad.reason, bad.message))
            continue
        kept.append(event)
        ids.append(event["id"])
        latencies.append(event["latency_seconds"])
        positions.append(index)

    warn = Warnings(limits.max_warnings, positions)
    columns = build_columns(profile, kept, ids, latencies, warn)
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
        body=body,
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
    obj = decode(body, limits)
    model, version, profile, raw_labels = envelope(obj, "labels", lookup, catalogue)
    check_count(raw_labels, "labels", limits)
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
            label_id, value = label(item, categorical, limits)
            if label_id in seen:
                raise FieldError(
                    "id", "duplicate_id", f"{label_id!r} appears earlier in this request"
                )
        except FieldError as bad:
            path = f"labels[{index}].{bad.key}" if bad.key else f"labels[{index}]"
            rejections.append(Rejection(index, path, bad.reason, bad.message))
            continue
        seen.add(label_id)
        ids.append(label_id)
        labels.append(value)
    return ParsedFeedback(
        model=model,
        version=version,
        profile=profile,
        ids=ids,
        labels=labels,
        received=len(raw_labels),
        rejections=rejections,
    )
