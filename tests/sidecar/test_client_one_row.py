"""The prediction logger's one-row ``log_many()`` path (one instance per request).

It must put on the wire exactly the bytes the general path puts there for the same row, and
count every event the same way: sent, rejected, dropped, with the same ids returned. Also: what
a buffered event costs in memory, on every path.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import tracemalloc
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from sidecar._client_transport import TransportResponse
from sidecar.client import LoggerStats, PredictionLogger
from tests.support.fake_sidecar import RecordingLog

_DEADLINE_SECONDS = 10.0


class _Raw:
    """An in-memory transport that accepts everything and keeps each body's bytes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = threading.Event()

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        self.bodies.append(body)
        self.arrived.set()
        count = len(json.loads(body)["events"])
        return TransportResponse(202, b'{"accepted": %d, "rejected": []}' % count)


def _value(rng: random.Random) -> object:
    """A feature value of a kind a model server may log, awkward ones included."""
    return rng.choice(
        [
            lambda: rng.uniform(-1e6, 1e6),
            lambda: rng.randint(-(2**63), 2**63 - 1),
            lambda: rng.choice(["red", "é ü", "\u2603", "", 'quote " and \\ slash']),
            lambda: None,
            lambda: rng.random() < 0.5,
            lambda: float("nan"),
            lambda: -math.inf,
            lambda: [rng.random(), "x", None],
            lambda: {"nested": rng.random()},
            lambda: np.float32(rng.random()),
            lambda: np.int64(rng.randint(0, 100)),
            lambda: np.array([rng.random(), rng.random()]),
        ]
    )()


def _call(rng: random.Random, i: int) -> dict[str, Any]:
    """The arguments of one random one-row ``log_many()`` call."""
    features: Any = {f"f{k}": _value(rng) for k in range(rng.randint(0, 6))}
    if rng.random() < 0.1:
        features = MappingProxyType(features)  # a Mapping that is not a dict
    scores: Any = None
    if rng.random() < 0.7:
        scores = [{str(c): rng.random() for c in range(rng.randint(1, 3))}]
        if rng.random() < 0.1:
            scores = [dict.fromkeys(range(2), 0.5)]  # non-str keys
        elif rng.random() < 0.1:
            scores = [None]
    return {
        "features": [features],
        "predictions": [rng.choice([1, "label", None, 0.25, [1, 2], np.int64(3)])],
        "latency_seconds": rng.choice([rng.random(), 0.0, float("nan")]),
        "status": rng.choice(["ok", "error"]),
        "event_ids": [f"e{i}"],
        "timestamp": 1_700_000_000.0 + rng.random() * 1e6,
        "scores": scores,
        "trace_id": rng.choice([None, f"t{i}"]),
        "attributes": rng.choice([None, {"request_id": f"r{i}"}, {"error": "boom", "n": i}]),
    }


def _twice(call: dict[str, Any]) -> dict[str, Any]:
    """The same call with every row given twice, which takes the general path."""
    rows = ("features", "predictions", "event_ids", "scores")
    return {k: (v * 2 if k in rows and v is not None else v) for k, v in call.items()}


def _settled(stats: LoggerStats) -> None:
    assert stats.sent + stats.dropped + stats.rejected + stats.sampled_out == stats.logged
    assert stats.buffered == stats.in_flight == 0


@pytest.mark.parametrize("seed", range(8))
def test_one_row_calls_send_the_bytes_of_the_general_path(seed: int) -> None:
    """Random one-row calls, each made twice, send the very bytes of one two-row call each."""
    rng = random.Random(seed)
    calls = [_call(rng, i) for i in range(200)]
    one, general = _Raw(), _Raw()
    short = PredictionLogger(model="m", version="1", transport=one, batch_size=10_000)
    long = PredictionLogger(model="m", version="1", transport=general, batch_size=10_000)
    for call in calls:
        assert short.log_many(**call) == call["event_ids"]
        assert short.log_many(**call) == call["event_ids"]
        assert long.log_many(**_twice(call)) == call["event_ids"] * 2
    short.close()
    long.close()
    assert one.bodies == general.bodies
    assert len(one.bodies) == 1
    assert short.stats() == long.stats()
    _settled(short.stats())


def test_one_row_event_has_the_documented_keys_in_order() -> None:
    """The event of a one-row call is the documented wire event, with a clock timestamp."""
    transport = _Raw()
    logger = PredictionLogger(model="m", version="1", transport=transport)
    before = time.time()
    [eid] = logger.log_many(
        features=[{"x": 1.5}],
        predictions=[1],
        latency_seconds=0.002,
        scores=[{"0": 0.25, "1": 0.75}],
        trace_id="t",
        attributes={"request_id": "r"},
    )
    after = time.time()
    logger.close()
    [event] = json.loads(transport.bodies[0])["events"]
    assert list(event) == [
        "id",
        "timestamp",
        "latency_seconds",
        "status",
        "trace_id",
        "attributes",
        "features",
        "prediction",
        "scores",
    ]
    assert event["id"] == eid
    assert len(eid) == 32
    assert before <= event["timestamp"] <= after
    assert (event["features"], event["prediction"], event["scores"]) == (
        {"x": 1.5},
        1,
        {"0": 0.25, "1": 0.75},
    )


def test_bad_one_row_events_are_rejected_exactly() -> None:
    """Among one-row calls, each unencodable event alone is counted rejected; the others go."""
    log = RecordingLog()
    transport = _Raw()
    logger = PredictionLogger(model="m", version="1", transport=transport, logger=log)
    rows: list[dict[str, object]] = [
        {"x": 1.0},
        {"x": object()},
        {"x": np.float32(2.0)},
        {"x": 2**70},
        {"x": 3.0},
    ]
    ids = [logger.log_many(features=[row], predictions=[0], latency_seconds=0.1) for row in rows]
    logger.close()
    stats = logger.stats()
    _settled(stats)
    assert (stats.logged, stats.rejected, stats.sent, stats.dropped) == (5, 2, 3, 0)
    assert all(len(i) == 1 and i[0] is not None for i in ids)
    sent = [e["id"] for e in json.loads(transport.bodies[0])["events"]]
    assert sent == [ids[0][0], ids[2][0], ids[4][0]]
    assert log.count("not valid JSON") == 1


def test_one_row_call_into_a_full_buffer_drops_the_oldest() -> None:
    """A one-row call into a full buffer pushes out the oldest event, counted dropped."""
    transport = _Raw()
    logger = PredictionLogger(
        model="m", version="1", transport=transport, max_buffer=2, batch_size=2
    )
    for i in range(3):
        logger.log_many(features=[{}], predictions=[i], latency_seconds=0, event_ids=[f"e{i}"])
    logger.close()
    stats = logger.stats()
    _settled(stats)
    assert (stats.logged, stats.dropped, stats.sent) == (3, 1, 2)
    assert [e["id"] for e in json.loads(transport.bodies[0])["events"]] == ["e1", "e2"]


def test_one_row_call_after_close_is_counted_dropped() -> None:
    """After close(), a one-row call is counted dropped and reported, and still returns its id."""
    log = RecordingLog()
    logger = PredictionLogger(model="m", version="1", transport=_Raw(), logger=log)
    logger.close()
    ids = logger.log_many(features=[{}], predictions=[1], latency_seconds=0, event_ids=["late"])
    assert ids == ["late"]
    stats = logger.stats()
    assert (stats.logged, stats.dropped, stats.buffered) == (1, 1, 0)
    assert log.count("log_many() after close()") == 1


@pytest.mark.parametrize(
    "lengths",
    [
        {"predictions": [1, 2]},
        {"event_ids": []},
        {"event_ids": ["a", "b"]},
        {"scores": []},
        {"scores": [None, None]},
    ],
)
def test_one_row_call_with_rows_of_other_lengths_is_dropped(lengths: dict[str, Any]) -> None:
    """One feature row with other sequences of another length queues nothing: one dropped."""
    log = RecordingLog()
    logger = PredictionLogger(model="m", version="1", transport=_Raw(), logger=log)
    call: dict[str, Any] = {"features": [{}], "predictions": [1], "latency_seconds": 0}
    logger.log_many(**{**call, **lengths})
    logger.close()
    stats = logger.stats()
    assert (stats.logged, stats.dropped, stats.sent) == (1, 1, 0)
    assert log.count("must have one length") == 1


def test_one_row_calls_fill_a_batch_and_wake_the_sender() -> None:
    """A batch filled by one-row calls is sent at once, without waiting for the interval."""
    transport = _Raw()
    logger = PredictionLogger(
        model="m", version="1", transport=transport, batch_size=3, flush_interval=3600
    )
    logger.start()
    try:
        # Once the sender waits on its event, only log_many() setting it can wake it before
        # the hour-long interval; events logged before that would be seen anyway.
        _until(lambda: len(logger._ready._cond._waiters) == 1)  # type: ignore[attr-defined]
        for i in range(3):
            logger.log_many(features=[{}], predictions=[i], latency_seconds=0)
        assert transport.arrived.wait(_DEADLINE_SECONDS)
        assert len(json.loads(transport.bodies[0])["events"]) == 3
    finally:
        logger.close()
    _settled(logger.stats())


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


@pytest.mark.parametrize("path", ["one row", "several rows", "log"])
def test_a_buffered_event_holds_about_its_own_size(path: str) -> None:
    """Each queued event keeps about its JSON's size in memory, not the encoder's 4 KiB block."""
    transport = _Raw()
    logger = PredictionLogger(model="m", version="1", transport=transport, max_buffer=2000)
    row = {"mean_radius": 17.5, "mean_texture": 21.0, "size_class": "large"}
    shared: dict[str, Any] = {"latency_seconds": 0.001, "trace_id": "t" * 32}
    tracemalloc.start()
    try:
        for _ in range(500):
            if path == "one row":
                logger.log_many(features=[row], predictions=[1], **shared)
            elif path == "several rows":
                logger.log_many(features=[row, row], predictions=[1, 2], **shared)
            else:
                logger.log(features=row, prediction=1, **shared)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    events = logger.stats().buffered
    logger.close()
    payload = sum(len(body) for body in transport.bodies)
    assert held < 2 * payload + 64 * events, (held / events, payload / events)


@pytest.mark.parametrize("rows", [1, 3])
def test_a_none_among_given_ids_gets_a_new_id_and_is_sent(rows: int) -> None:
    """A None in ``event_ids`` is replaced by a new id and the row is sent, never lost uncounted."""
    transport = _Raw()
    logger = PredictionLogger(model="m", version="1", transport=transport)
    given: list[Any] = [None] + [f"e{i}" for i in range(1, rows)]
    ids = logger.log_many(
        features=[{}] * rows, predictions=[0] * rows, latency_seconds=0, event_ids=given
    )
    logger.close()
    stats = logger.stats()
    _settled(stats)
    assert (stats.logged, stats.sent) == (rows, rows)
    assert ids[0] is not None
    assert ids[1:] == given[1:]
    assert [e["id"] for e in json.loads(transport.bodies[0])["events"]] == ids
