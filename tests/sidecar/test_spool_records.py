"""Spool records: one accepted request, decoded back to exactly the events the parser kept."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from sidecar.events import IngestLimits, ProfileLookup, parse_events
from sidecar.profile import Profile
from sidecar.spool_records import (
    SpoolRecordError,
    decode_batch,
    encode_batch,
    encode_parsed,
)
from tests.support.profiles import make_profile


def _profile() -> Profile:
    rng = np.random.default_rng(1)
    return make_profile("m", "1", {"x": rng.normal(size=200)}, prediction=rng.normal(size=200))


def _lookup(profile: Profile) -> ProfileLookup:
    return lambda model, version: profile if (model, version) == ("m", "1") else None


def _event(event_id: object, **extra: object) -> dict[str, object]:
    event: dict[str, object] = {
        "id": event_id,
        "timestamp": 1_700_000_000.5,
        "latency_seconds": 0.01,
        "features": {"x": 1.0},
        "prediction": 0.5,
    }
    event.update(extra)
    return event


@pytest.mark.parametrize(
    "events",
    [
        [_event("a"), _event("b", status="error", timestamp="2026-01-01T01:00:00+01:00")],
        [_event("a"), _event(7), _event("a"), _event("c", features={"x": "text"})],
    ],
    ids=["fast-path", "careful-path"],
)
def test_decoded_events_equal_the_parsers_accepted_events(events: list[object]) -> None:
    """Whichever parse path accepted a body, decode_batch gives its accepted_events back."""
    profile = _profile()
    body = orjson.dumps({"model": "m", "version": "1", "events": events})
    parsed = parse_events(body, _lookup(profile), IngestLimits())
    decoded = decode_batch(encode_parsed(parsed, 1_700_000_001.25))
    assert (decoded.model, decoded.version, decoded.received_at) == ("m", "1", 1_700_000_001.25)
    assert decoded.events == list(parsed.accepted_events)
    assert len(decoded.events) == parsed.accepted


def test_the_body_is_kept_byte_for_byte() -> None:
    """The record ends with the request body unchanged (no re-encoding on the ingest path)."""
    body = b'{"model":"m","version":"1","events":[]}'
    assert encode_batch("m", "1", 1.0, body, []).endswith(b"\n" + body)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"no newline", "header"),
        (b"{oops\n{}", "header"),
        (b'{"f":99}\n{}', "header"),
        (b'{"f":1,"m":"m","v":"1","t":1.0,"r":"x"}\n{}', "header.r"),
        (b'{"f":1,"m":"m","v":"1","t":1.0,"r":[]}\n{"events":[', "body"),
        (b'{"f":1,"m":"m","v":"1","t":1.0,"r":[]}\n{"other":1}', "body"),
        (b'{"f":1,"m":"m","v":"1","t":1.0,"r":[]}\n{"events":[{"id":"a"}]}', "body"),
    ],
)
def test_undecodable_records_name_the_part_at_fault(payload: bytes, field: str) -> None:
    """A damaged or foreign record raises SpoolRecordError naming header, a header key or body."""
    with pytest.raises(SpoolRecordError) as caught:
        decode_batch(payload)
    assert caught.value.field == field
