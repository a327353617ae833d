"""What one spool record holds: one accepted ``POST /v1/events`` request, as received.

A record is a one-line JSON header (model, version, when the request was received, which
events were rejected) and then the request body byte for byte. The ingest path therefore pays
one small ``orjson.dumps`` and one copy per request, never a re-encoding of its events; the
shipper thread pays for decoding, off the prediction path. ``decode_batch`` gives back the
accepted events exactly as ``ParsedEvents.accepted_events`` held them (the careful path's
event checker normalises them), so what is shipped after a restart equals what would have been
shipped straight away.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sidecar._fast_path import normalised_events
from sidecar._field_rules import FieldError
from sidecar._ingest_types import IngestLimits, ParsedEvents
from sidecar.errors import ModelwatchError

__all__ = [
    "DecodedBatch",
    "RecordHead",
    "SpoolRecordError",
    "decode_batch",
    "encode_batch",
    "encode_parsed",
    "split_record",
]

FORMAT = 1
"""Bumped when the header changes; a record of another format is refused, not guessed at."""

_SEPARATOR = b"\n"
# Ids were checked against the configured limit when the request was accepted; a restart with
# a smaller limit must not turn spooled, acknowledged events into errors.
_REPLAY_LIMITS = IngestLimits(max_id_length=sys.maxsize)


class SpoolRecordError(ModelwatchError):
    """A spool record cannot be decoded; ``field`` names the part at fault."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"spool record {field}: {reason}")


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The accepted events of one request, normalised, with the model version they belong to."""

    model: str
    version: str
    received_at: float
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RecordHead:
    """A record's header: model, version, when it was received, the rejected event indices."""

    model: str
    version: str
    received_at: float
    rejected: frozenset[int]


def encode_batch(
    model: str, version: str, received_at: float, body: bytes, rejected: Sequence[int]
) -> bytes:
    """One spool record: a header line, then ``body`` unchanged.

    ``received_at`` is wall-clock epoch seconds; ``rejected`` are the indices of the events the
    parser rejected, which the shipper skips.
    """
    header = {"f": FORMAT, "m": model, "v": version, "t": received_at, "r": list(rejected)}
    return orjson.dumps(header) + _SEPARATOR + body


def encode_parsed(parsed: ParsedEvents, received_at: float) -> bytes:
    """``encode_batch`` of a parsed request (what the ingest hook spools)."""
    rejected = [r.index for r in parsed.rejections] if parsed.rejections else ()
    return encode_batch(parsed.model, parsed.version, received_at, parsed.body, rejected)


def split_record(payload: bytes) -> tuple[RecordHead, bytes]:
    """A record's checked header and its body; ``SpoolRecordError`` for a bad header."""
    head, sep, body = payload.partition(_SEPARATOR)
    if not sep:
        raise SpoolRecordError("header", "no header line")
    header = _header(head)
    return RecordHead(header["m"], header["v"], header["t"], frozenset(header["r"])), body


def decode_batch(payload: bytes) -> DecodedBatch:
    """The accepted events of a record; ``SpoolRecordError`` when it is not one this wrote."""
    head, body = split_record(payload)
    try:
        events = normalised_events(body, _REPLAY_LIMITS, head.rejected)
    except orjson.JSONDecodeError as exc:
        raise SpoolRecordError("body", f"not valid JSON: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise SpoolRecordError("body", "has no events list") from exc
    except FieldError as exc:
        raise SpoolRecordError(
            "body", f"an accepted event is invalid: {exc.key}: {exc.message}"
        ) from exc
    return DecodedBatch(head.model, head.version, head.received_at, events)


def _header(head: bytes) -> dict[str, Any]:
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise SpoolRecordError("header", f"not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("f") != FORMAT:
        raise SpoolRecordError("header", f"not a format {FORMAT} record header")
    shapes = {"m": str, "v": str, "t": int | float, "r": list}
    for key, kind in shapes.items():
        if not isinstance(header.get(key), kind):
            raise SpoolRecordError(f"header.{key}", "is missing or of the wrong type")
    if not all(isinstance(i, int) for i in header["r"]):
        raise SpoolRecordError("header.r", "must list event indices")
    header["t"] = float(header["t"])
    return header
