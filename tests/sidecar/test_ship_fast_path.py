"""The shipper's one-pass path against the reference path (decode_batch, then predictions)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sidecar.shipper
from sidecar._dead_letter import DeadLetterFile
from sidecar._ship_documents import record_documents
from sidecar.documents import Document, DocumentBuilder
from sidecar.logs import get_logger
from sidecar.redaction import Redaction
from sidecar.shipper import Shipper, ShipperConfig
from sidecar.sinks import DELIVERED, ItemResult, Outcome
from sidecar.spool import SpoolPosition
from sidecar.spool_records import SpoolRecordError, decode_batch, encode_batch
from tests.sidecar.test_fast_path import bodies
from tests.sidecar.test_shipper import FakeSpool

RECEIVED = 1_795_597_200.125


def reference(payload: bytes, builder: DocumentBuilder) -> list[Document]:
    """What a record shipped before the one-pass path: the definition of its documents."""
    batch = decode_batch(payload)
    return builder.predictions(
        batch.model, batch.version, batch.events, received_at=batch.received_at
    )


def old_bulk_lines(document: Document) -> bytes:
    """The ``_bulk`` lines as they were written before the action line's head was cached."""
    action = orjson.dumps({"create": {"_index": document.index, "_id": document.id}})
    return b"%b\n%b\n" % (action, orjson.dumps(document.source))


def outcome(call: Any) -> tuple[str, object]:
    """``("ok", value)`` or ``("raises", (type, message))`` of calling ``call()``."""
    try:
        return "ok", call()
    except Exception as exc:
        return "raises", (type(exc), str(exc))


# ----------------------------------------------------------------------------- strategies

_BUILDERS = [
    DocumentBuilder(),
    DocumentBuilder(
        namespace="prod",
        kubernetes={"pod.name": "p-0", "namespace": "ml", "node.name": "n1"},
        redaction=Redaction(drop=frozenset({"y"}), hash=frozenset({"x", "c"}), key=b"k"),
    ),
]

_odd_events = st.sampled_from(
    [
        {"attributes": {"request_id": "r-1", "a.b": [1, {"x": None}], "n": None, "t": True}},
        {"attributes": {"request_id": 7, "k": "v"}},
        {"attributes": {}},
        {"trace_id": "t" * 40, "scores": {"a": 1, "b": 0.25, "c": 2**63}},
        {"scores": {"a": True}},
        {"scores": {"a": "1"}},
        {"scores": []},
        {"scores": {"a": None}},
        {"trace_id": 5},
        {"attributes": "a"},
        {"attributes": []},
        {"attributes": 0},
        {"attributes": None, "trace_id": None, "scores": None},
        {"id": "x" * 600},
        {"id": "é" * 130},
        {"id": "é" * 120},
        {"id": ""},
        {"timestamp": 1_795_597_200.123456},
        {"timestamp": -1e20},
        {"timestamp": [1]},
        {"timestamp": True},
        {"timestamp": "2026-11-25T10:00:00+01:00"},
        {"timestamp": "2026-02-30T09:00:00Z"},
        {"latency_seconds": 3},
        {"latency_seconds": -0.0},
        {"latency_seconds": 2**64},
        {"latency_seconds": -1},
        {"latency_seconds": True},
        {"status": "error"},
        {"status": "OK"},
        {"status": ["ok"]},
        {"features": []},
        {"features": None},
        {"status": None},
        {"extra_key": 1},
    ]
)


@st.composite
def records(draw: st.DrawFn) -> tuple[bool, bytes]:
    """``(clean, record)``: a body from the fast-path tests, maybe edited, under a random header."""
    _, clean, raw = draw(bodies())
    envelope = json.loads(raw)
    events = envelope["events"]
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(events) - 1))
        if isinstance(events[index], dict):
            events[index] = {**events[index], **draw(_odd_events)}
            clean = False
    if draw(st.integers(0, 9)) == 0:
        events.append(dict(events[0]) if isinstance(events[0], dict) else None)
        clean = False
    if draw(st.integers(0, 9)) == 0:
        drop = draw(
            st.sampled_from(["id", "timestamp", "latency_seconds", "features", "prediction"])
        )
        events[0] = {k: v for k, v in events[0].items() if k != drop}
        clean = False
    body = json.dumps(envelope, ensure_ascii=False, allow_nan=False).encode()
    rejected = draw(st.lists(st.integers(-1, len(events)), max_size=3, unique=True))
    return clean, encode_batch("m", "1", RECEIVED, body, rejected)


# ----------------------------------------------------------------------------- the property


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.sampled_from(_BUILDERS))
def test_the_one_pass_path_ships_what_the_reference_path_ships(
    case: tuple[bool, bytes], builder: DocumentBuilder
) -> None:
    """Whenever the one-pass path answers, its documents and bytes equal the reference path's."""
    clean, payload = case
    fast = record_documents(payload, builder)
    kind, expected = outcome(lambda: reference(payload, builder))
    if clean:
        assert fast is not None
    if fast is None:
        return
    assert kind == "ok", expected
    assert fast == expected
    assert [outcome(d.bulk_lines) for d in fast] == [
        outcome(lambda d=d: old_bulk_lines(d)) for d in fast
    ]


class LinesSink:
    """Keeps each delivered document's ``_bulk`` bytes; a document JSON cannot carry is DEAD."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def send(self, documents: Sequence[Document]) -> list[ItemResult]:
        results = []
        for document in documents:
            try:
                self.lines.append(document.bulk_lines())
            except TypeError as exc:
                results.append(ItemResult(Outcome.DEAD, f"not JSON: {exc}"))
                continue
            results.append(DELIVERED)
        return results

    def close(self) -> None:
        pass


def ship(
    payloads: Sequence[bytes], builder: DocumentBuilder, *, one_pass: bool
) -> tuple[object, list[bytes], bytes, dict[str, int], list[SpoolPosition]]:
    """Everything a shipper does with ``payloads``: bytes shipped, dead letters, counts, commits."""
    spool = FakeSpool(payloads)
    sink = LinesSink()
    with tempfile.TemporaryDirectory() as tmp:
        shipper = Shipper(
            spool,
            sink,
            builder,
            dead_letter=DeadLetterFile(Path(tmp), wall_clock=lambda: RECEIVED),
            logger=get_logger(),
            config=ShipperConfig(batch_docs=7),
        )
        reference_only = mock.patch.object(sidecar.shipper, "record_documents", return_value=None)
        with contextlib.nullcontext() if one_pass else reference_only:
            result = outcome(lambda: [shipper.ship_once() for _ in range(len(payloads) + 1)])
        dead = b"".join(path.read_bytes() for path in sorted(Path(tmp).iterdir()))
    return result, sink.lines, dead, shipper.stats.outcomes(), spool.commits


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=3), st.sampled_from(_BUILDERS))
def test_a_shipper_ships_and_dead_letters_as_before(
    cases: list[tuple[bool, bytes]], builder: DocumentBuilder
) -> None:
    """The whole shipper (documents, bytes, dead letters, counts, commits) is as before."""
    payloads = [payload for _, payload in cases]
    assert ship(payloads, builder, one_pass=True) == ship(payloads, builder, one_pass=False)


# ----------------------------------------------------------------------------- examples

OLD_RECORD = (
    b'{"f":1,"m":"m","v":"1","t":1795597200.125,"r":[1]}\n'
    b'{"model":"m","version":"1","events":['
    b'{"id":"a","timestamp":"2026-11-25T09:00:00.123Z","latency_seconds":0.004,'
    b'"status":"ok","features":{"x":1.5,"c":"u"},"prediction":0.7},'
    b'{"id":"rejected","timestamp":"bad","latency_seconds":-1,"features":{},"prediction":null},'
    b'{"id":"b","timestamp":1795597200.5,"latency_seconds":2,"features":{"x":null},'
    b'"prediction":null,"attributes":{"request_id":"r-9","k.v":1}}]}'
)
"""A record exactly as the spool has always written it (format 1, no other header field)."""


def test_a_record_written_before_ships_the_same_documents() -> None:
    """A record in the spool's existing format gives the reference documents, field by field."""
    builder = DocumentBuilder()
    documents = record_documents(OLD_RECORD, builder)
    assert documents == reference(OLD_RECORD, builder)
    assert [d.id for d in documents] == ["a", "b"]
    first, second = (d.source for d in documents)
    assert first["@timestamp"] == "2026-11-25T09:00:00.123Z"
    assert first["event"] == {
        "id": "a",
        "kind": "event",
        "module": "modelwatch",
        "dataset": "modelwatch.predictions",
        "duration": 4_000_000,
        "outcome": "success",
        "created": "2026-11-25T09:00:00.125Z",
    }
    assert second["@timestamp"] == "2026-11-25T09:00:00.500000Z"
    assert second["labels"] == {"request_id": "r-9", "k_v": "1"}
    assert second["http"] == {"request": {"id": "r-9"}}
    assert [d.bulk_lines() for d in documents] == [old_bulk_lines(d) for d in documents]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"model":"m","version":"1"}',
        b'{"model":"m","version":"1","events":{"a":1}}',
        b'{"model":"m","version":"1","events":[{"id":"a"}]}',
    ],
    ids=["not json", "no events", "events not a list", "invalid event"],
)
def test_records_the_reference_path_refuses_are_left_to_it(body: bytes) -> None:
    """A body the reference path refuses gets no answer here, so it is dead-lettered as before."""
    payload = encode_batch("m", "1", RECEIVED, body, ())
    assert record_documents(payload, DocumentBuilder()) is None
    with pytest.raises(SpoolRecordError):
        decode_batch(payload)


def test_a_bad_header_raises_as_the_reference_path_does() -> None:
    """A record without a valid header raises the same SpoolRecordError on both paths."""
    payload = b'{"f":2}\n{"events":[]}'
    with pytest.raises(SpoolRecordError) as fast:
        record_documents(payload, DocumentBuilder())
    with pytest.raises(SpoolRecordError) as slow:
        decode_batch(payload)
    assert str(fast.value) == str(slow.value)


def test_bulk_lines_fail_as_before_on_a_value_json_cannot_carry() -> None:
    """A source JSON cannot carry raises the same TypeError as the uncached action line did."""
    document = Document("logs-modelwatch.predictions-default", "bad", {"value": object()})
    assert outcome(document.bulk_lines) == outcome(lambda: old_bulk_lines(document))
    assert outcome(document.bulk_lines)[0] == "raises"


@pytest.mark.parametrize("received_at", [RECEIVED, 1e20])
def test_a_record_with_an_invalid_event_is_dead_lettered_as_before(received_at: float) -> None:
    """An invalid kept event dead-letters its record with the reference path's reason."""
    good = {"id": "a", "timestamp": 1.5, "latency_seconds": 0.1, "features": {}, "prediction": 1}
    body = orjson.dumps({"model": "m", "version": "1", "events": [good, {**good, "id": 7}]})
    payloads = [encode_batch("m", "1", received_at, body, ())]
    shipped = ship(payloads, DocumentBuilder(), one_pass=True)
    assert shipped == ship(payloads, DocumentBuilder(), one_pass=False)
    _, lines, dead, _, _ = shipped
    assert lines == []
    assert b"an accepted event is invalid: id: must be a string" in dead
