"""The shipper's fast path: a spool record's prediction documents in one pass over its events.

``decode_batch`` then ``DocumentBuilder.predictions`` define what a record ships: the body's
events as orjson decodes them, each normalised by the careful path's event checker, laid out as
ECS documents. For a record whose kept events are all plain, this module builds equal documents
(equal sources, so equal bytes) from the same orjson objects, checking each event with a few
type tests instead of the checker's pass and building its document in the same loop.

It answers only when it can vouch for the answer. Whenever a kept event is anything the checker
would refuse, or would normalise in a way not reproduced here, or building a document raises,
it returns None and the shipper takes the reference path, which words the error and
dead-letters the record exactly as before. It never changes what is shipped.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from sidecar._field_rules import MAX_LATENCY_SECONDS, FieldError, normalised_timestamp
from sidecar.documents import (
    ECS_VERSION,
    EVENT_MODULE,
    MAX_ID_BYTES,
    PREDICTIONS_DATASET,
    REQUEST_ID_ATTRIBUTE,
    Document,
    DocumentBuilder,
    PredictionTemplate,
    document_id,
    labels_from,
)
from sidecar.spool_records import split_record

__all__ = ["plain_documents", "record_documents"]

_NS_PER_SECOND = 1_000_000_000
_REQUIRED = 5
"""Keys every event has: id, timestamp, latency_seconds, features, prediction."""
_MAX_INT = 2**64
"""orjson decodes integers up to 64 bits as ``int`` (larger ones as floats)."""


def record_documents(payload: bytes, builder: DocumentBuilder) -> list[Document] | None:
    """The documents of one spool record when every kept event is plain; None otherwise.

    Raises ``SpoolRecordError`` for a bad header, as ``decode_batch`` does; a body it cannot
    vouch for (not JSON, no events list, an odd event) gives None.
    """
    head, body = split_record(payload)
    try:
        events = orjson.loads(body)["events"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if type(events) is not list:
        return None
    if head.rejected:
        rejected = head.rejected
        events = [event for i, event in enumerate(events) if i not in rejected]
    try:
        template = builder.prediction_template(
            head.model, head.version, received_at=head.received_at
        )
        return plain_documents(template, events)
    except Exception:
        # Why: a document that fails to build is the reference path's to report; there the
        # checker sees every event first, so its error may be a different one.
        return None


def plain_documents(template: PredictionTemplate, events: list[Any]) -> list[Document] | None:
    """``DocumentBuilder.predictions`` of the events, unnormalised, when all are plain; else None.

    ``events`` are orjson's objects as they stand in the body (without the rejected ones).
    """
    index = template.index
    model = template.model
    created = template.created
    service = template.service
    data_stream = template.data_stream
    kubernetes = template.kubernetes
    redaction = template.redaction
    ecs = {"version": ECS_VERSION}
    stamps: dict[str, str] = {}
    ids: set[str] = set()
    add_id = ids.add
    documents: list[Document] = []
    for event in events:
        if type(event) is not dict:
            return None
        # A missing required key raises KeyError: the caller's fallback, like any surprise.
        event_id = event["id"]
        stamp = event["timestamp"]
        latency = event["latency_seconds"]
        features = event["features"]
        prediction = event["prediction"]
        if type(event_id) is not str or not event_id or event_id in ids:
            return None
        add_id(event_id)
        timestamp = stamps.get(stamp)
        if timestamp is None:
            try:
                timestamp = normalised_timestamp(stamp)
            except FieldError:
                return None
            if type(stamp) is str:
                stamps[stamp] = timestamp
        if type(latency) is int and 0 <= latency <= MAX_LATENCY_SECONDS:
            latency = float(latency)
        elif type(latency) is not float or not 0.0 <= latency <= MAX_LATENCY_SECONDS:
            return None
        if type(features) is not dict:
            return None
        size = len(event)
        if size == _REQUIRED or (size == _REQUIRED + 1 and "status" in event):
            status = event.get("status")
            scores = trace_id = attributes = None
        else:
            status = event.get("status")
            scores = event.get("scores")
            trace_id = event.get("trace_id")
            attributes = event.get("attributes")
            if (scores is not None or trace_id is not None or attributes is not None) and not (
                _optional_plain(scores, trace_id, attributes)
            ):
                return None
        if status is None or status == "ok":
            outcome = "success"
        elif status == "error":
            outcome = "failure"
        else:
            return None
        ecs_event: dict[str, object] = {
            "id": event_id,
            "kind": "event",
            "module": EVENT_MODULE,
            "dataset": PREDICTIONS_DATASET,
            "duration": round(latency * _NS_PER_SECOND),
            "outcome": outcome,
        }
        if created is not None:
            ecs_event["created"] = created
        if redaction is not None:
            features = redaction.apply(features)
        ml: dict[str, object] = {
            "model": model,
            "features": features,
            "prediction": prediction,
        }
        if scores is not None:
            ml["scores"] = scores
        source: dict[str, object] = {
            "@timestamp": timestamp,
            "ecs": ecs,
            "event": ecs_event,
            "service": service,
            "data_stream": data_stream,
            "ml": ml,
        }
        if trace_id is not None:
            source["trace"] = {"id": trace_id}
        if attributes:
            source["labels"] = labels_from(attributes)
            request_id = attributes.get(REQUEST_ID_ATTRIBUTE)
            if isinstance(request_id, str):
                source["http"] = {"request": {"id": request_id}}
        if kubernetes is not None:
            source["kubernetes"] = kubernetes
        if len(event_id) * 4 > MAX_ID_BYTES:
            event_id = document_id(event_id)
        documents.append(Document(index, event_id, source))
    return documents


def _optional_plain(scores: object, trace_id: object, attributes: object) -> bool:
    """Whether the checker takes these optional fields as they are."""
    if scores is not None:
        if type(scores) is not dict:
            return False
        for score in scores.values():
            if type(score) is int:
                if not -_MAX_INT < score < _MAX_INT:
                    return False
            elif type(score) is not float or not math.isfinite(score):
                return False
    if trace_id is not None and type(trace_id) is not str:
        return False
    return attributes is None or type(attributes) is dict
