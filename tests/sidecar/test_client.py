"""The prediction logger on a healthy sidecar.

Batching, exactly-once delivery, sampling, validation, metrics, encoding, and an end-to-end run
against the real ingest app.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from scipy import stats as scipy_stats

from sidecar import _client_encoding
from sidecar._client_encoding import encode_json
from sidecar._client_transport import TransportResponse
from sidecar.client import LoggerStats, PredictionLogger, new_event_id
from sidecar.logs import get_logger
from sidecar.profile import dump_profile
from sidecar.server import Sidecar
from sidecar.settings import Settings, env_key
from tests.support.fake_sidecar import FakeSidecar, RecordingLog, at_most
from tests.support.profiles import make_profile
from tests.support.sidecar_dirs import dirs_overrides
from tests.support.tools import promtool_check_metrics

ROOT = Path(__file__).resolve().parents[2]
FEATURES = {"x": 0.5, "colour": "red"}
TOKEN = "s3cret"  # noqa: S105 - a test token
CONFIDENCE = 1e-6
"""Two-sided level of the binomial bounds: a correct sampler fails them once in a million runs."""


def _settled(stats: LoggerStats) -> None:
    assert stats.sent + stats.dropped + stats.rejected + stats.sampled_out == stats.logged
    assert stats.buffered == stats.in_flight == 0


def _log(logger: PredictionLogger, n: int, prefix: str = "e") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    for event_id in ids:
        assert logger.log(features=FEATURES, prediction=1, latency_seconds=0.01, event_id=event_id)
    return ids


class _Accepting:
    """An in-memory transport that accepts everything and keeps the bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        payload = json.loads(body)
        self.bodies.append(payload)
        return TransportResponse(202, b'{"accepted": %d, "rejected": []}' % len(payload["events"]))


# --------------------------------------------------------------------------- batching


def test_batches_by_count() -> None:
    """A full batch is sent at once, without waiting for the flush interval."""
    with FakeSidecar() as fake:
        logger = PredictionLogger(
            model="m", version="1", url=fake.url, batch_size=10, flush_interval=3600
        )
        logger.start()
        ids = _log(logger, 30)
        fake.wait_until(lambda: logger.stats().sent == 30)
        assert [len(r) for r in fake.requests] == [10, 10, 10]
        logger.close()
    assert fake.accepted == ids


def test_batches_by_time() -> None:
    """Fewer events than a batch are sent once the flush interval passes, before close()."""
    with FakeSidecar() as fake:
        logger = PredictionLogger(
            model="m", version="1", url=fake.url, batch_size=1000, flush_interval=0.02
        )
        logger.start()
        ids = _log(logger, 7)
        fake.wait_until(lambda: logger.stats().sent == 7)
        logger.close()
    assert fake.accepted == ids


def test_healthy_sidecar_gets_every_event_exactly_once() -> None:
    """Events logged from several threads arrive once each, and every one is counted sent."""
    with FakeSidecar() as fake:
        logger = PredictionLogger(model="m", version="1", url=fake.url, batch_size=64)
        logger.start()
        threads = [threading.Thread(target=_log, args=(logger, 500, f"t{t}-")) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        logger.close()
    stats = logger.stats()
    _settled(stats)
    assert stats.sent == stats.logged == 2000
    assert len(fake.accepted) == len(set(fake.accepted)) == 2000


def test_close_flushes_what_is_buffered() -> None:
    """close() sends events still waiting for their batch or interval."""
    with FakeSidecar() as fake:
        logger = PredictionLogger(
            model="m", version="1", url=fake.url, batch_size=1000, flush_interval=3600
        )
        logger.start()
        ids = _log(logger, 5)
        logger.close()
        assert fake.accepted == ids
    _settled(logger.stats())


def test_close_without_start_flushes_inline() -> None:
    """A logger that was never started still delivers its buffer when closed."""
    with FakeSidecar() as fake:
        logger = PredictionLogger(model="m", version="1", url=fake.url)
        ids = _log(logger, 5)
        logger.close()
        assert fake.accepted == ids
    assert logger.stats().sent == 5


def test_too_large_batches_are_split() -> None:
    """A 413 answer splits the batch in halves until the sidecar takes them, in order."""
    with FakeSidecar(at_most(3)) as fake:
        logger = PredictionLogger(model="m", version="1", url=fake.url, batch_size=10)
        ids = _log(logger, 10)
        logger.close()
        assert fake.accepted == ids
    stats = logger.stats()
    assert (stats.sent, stats.rejected) == (10, 0)


def test_context_manager_and_aclose() -> None:
    """``with`` starts and closes; ``aclose`` closes from an event loop."""
    transport = _Accepting()
    with PredictionLogger(model="m", version="1", transport=transport) as logger:
        _log(logger, 3)
    assert logger.stats().sent == 3

    async def main() -> LoggerStats:
        other = PredictionLogger(model="m", version="1", transport=transport)
        other.start()
        _log(other, 4)
        await other.aclose()
        return other.stats()

    assert asyncio.run(main()).sent == 4


# --------------------------------------------------------------------------- log()


def test_log_returns_given_or_new_ids_and_frames_the_wire_event() -> None:
    """log() returns the given id or a new 32-hex-digit one; the body follows the wire format."""
    transport = _Accepting()
    logger = PredictionLogger(model="m", version="7", transport=transport)
    given = logger.log(
        features={"x": 1.5},
        prediction="1",
        latency_seconds=0.004,
        event_id="abc",
        timestamp=1_700_000_000.0,
        scores={"0": 0.25, "1": 0.75},
        trace_id="t-1",
        attributes={"region": "eu"},
        status="error",
    )
    new = logger.log(features={}, prediction=None, latency_seconds=0.0)
    logger.close()
    assert given == "abc"
    assert new is not None
    assert len(new) == 32
    assert int(new, 16) >= 0
    body = transport.bodies[0]
    assert (body["model"], body["version"]) == ("m", "7")
    assert body["events"][0] == {
        "id": "abc",
        "timestamp": 1_700_000_000.0,
        "latency_seconds": 0.004,
        "status": "error",
        "features": {"x": 1.5},
        "prediction": "1",
        "scores": {"0": 0.25, "1": 0.75},
        "trace_id": "t-1",
        "attributes": {"region": "eu"},
    }
    assert set(body["events"][1]) == {
        "id",
        "timestamp",
        "latency_seconds",
        "status",
        "features",
        "prediction",
    }


def test_new_event_ids_are_unique_across_threads() -> None:
    """Ids made by many threads at once are all distinct, each 32 hex digits."""
    per_thread, threads = 20_000, 8
    made: list[list[str]] = [[] for _ in range(threads)]

    def make(out: list[str]) -> None:
        out.extend(new_event_id() for _ in range(per_thread))

    workers = [threading.Thread(target=make, args=(out,)) for out in made]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    everything = [i for out in made for i in out]
    assert len(set(everything)) == per_thread * threads
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in everything)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_draws_a_new_id_prefix() -> None:
    """A process forked after import makes ids that share no prefix with its parent's."""
    parent = new_event_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child[:24] != parent[:24]


def _wire_events(transport: _Accepting) -> list[dict[str, Any]]:
    return [event for body in transport.bodies for event in body["events"]]


def test_log_many_sends_what_log_calls_would() -> None:
    """log_many() puts the same wire events in the body as one log() call per row."""
    rows: list[dict[str, Any]] = [
        {"x": 1.0, "colour": "red"},
        {"x": 2.0, "colour": "blue"},
        {"x": 3.0, "colour": None},
    ]
    scores: list[dict[str, float] | None] = [{"0": 0.1, "1": 0.9}, None, {"0": 0.5, "1": 0.5}]
    shared: dict[str, Any] = {
        "latency_seconds": 0.003,
        "status": "error",
        "timestamp": 1_700_000_000.0,
        "trace_id": "t-9",
        "attributes": {"error": "boom"},
    }
    one, many = _Accepting(), _Accepting()
    single = PredictionLogger(model="m", version="1", transport=one)
    for i, row in enumerate(rows):
        single.log(features=row, prediction=i, event_id=f"e{i}", scores=scores[i], **shared)
    single.close()
    batched = PredictionLogger(model="m", version="1", transport=many)
    ids = batched.log_many(
        features=rows,
        predictions=[0, 1, 2],
        event_ids=["e0", "e1", "e2"],
        scores=scores,
        **shared,
    )
    batched.close()
    assert ids == ["e0", "e1", "e2"]
    assert _wire_events(many) == _wire_events(one)
    assert batched.stats() == single.stats()


def test_log_many_makes_ids_and_settles_every_row() -> None:
    """Without ids it makes one per row; an unencodable row is rejected, the others are sent."""
    transport = _Accepting()
    log = RecordingLog()
    logger = PredictionLogger(model="m", version="1", transport=transport, logger=log)
    ids = logger.log_many(
        features=[{"x": 1.0}, {"x": object()}, {"x": 3.0}],
        predictions=[1, 2, 3],
        latency_seconds=0.01,
    )
    logger.close()
    stats = logger.stats()
    _settled(stats)
    assert len(set(ids)) == 3
    assert all(i is not None and len(i) == 32 for i in ids)
    assert (stats.logged, stats.sent, stats.rejected) == (3, 2, 1)
    assert [e["id"] for e in _wire_events(transport)] == [ids[0], ids[2]]
    assert log.count("not valid JSON") == 1


def test_structlog_logger_gets_the_model_as_structured_fields() -> None:
    """With a structlog logger, problem lines carry ``ml.model.name`` and ``ml.model.version``."""
    with structlog.testing.capture_logs() as lines:
        logger = PredictionLogger(
            model="tumour", version="7", transport=_Accepting(), logger=structlog.get_logger()
        )
        logger.log_many(features=[{}, {}], predictions=[1], latency_seconds=0.01)
        logger.close()
    warnings = [line for line in lines if "must have one length" in line["event"]]
    assert len(warnings) == 1
    assert (warnings[0]["ml.model.name"], warnings[0]["ml.model.version"]) == ("tumour", "7")


def test_stdlib_logger_gets_the_model_as_record_attributes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a stdlib logger, problem records carry the model as attributes and in the text."""
    stdlib = logging.getLogger("tests.client.model_fields")
    with caplog.at_level(logging.WARNING, logger=stdlib.name):
        logger = PredictionLogger(
            model="tumour", version="7", transport=_Accepting(), logger=stdlib
        )
        logger.log_many(features=[{}, {}], predictions=[1], latency_seconds=0.01)
        logger.close()
    records = [r for r in caplog.records if "must have one length" in r.getMessage()]
    assert len(records) == 1
    fields = vars(records[0])
    assert (fields["ml.model.name"], fields["ml.model.version"]) == ("tumour", "7")
    assert "(tumour 7)" in records[0].getMessage()


def test_log_many_with_mismatched_lengths_drops_without_raising() -> None:
    """Sequences of different lengths queue nothing and count every row as dropped."""
    log = RecordingLog()
    logger = PredictionLogger(model="m", version="1", transport=_Accepting(), logger=log)
    logger.log_many(features=[{}, {}, {}], predictions=[1, 2], latency_seconds=0.01)
    logger.close()
    stats = logger.stats()
    _settled(stats)
    assert (stats.logged, stats.dropped, stats.sent) == (3, 3, 0)
    assert log.count("must have one length, got 3, 2, 3, 3") == 1


def test_log_many_samples_by_id_like_log() -> None:
    """With a sample rate, log_many() keeps exactly the ids log() would keep."""
    ids = [f"req-{i}" for i in range(2_000)]
    loggers = [
        PredictionLogger(model="m", version="1", transport=_Accepting(), sample_rate=0.3)
        for _ in range(2)
    ]
    one_by_one = [
        loggers[0].log(features={}, prediction=1, latency_seconds=0, event_id=i) for i in ids
    ]
    together = loggers[1].log_many(
        features=[{}] * len(ids), predictions=[1] * len(ids), latency_seconds=0, event_ids=ids
    )
    for logger in loggers:
        logger.close()
    assert together == one_by_one
    assert loggers[1].stats() == loggers[0].stats()


def test_log_many_samples_rows_without_an_id_at_random_like_log() -> None:
    """A None among given ids is sampled by the random draw log() makes without an id."""
    given = [None if i % 2 else f"req-{i}" for i in range(2_000)]
    loggers = [
        PredictionLogger(
            model="m", version="1", transport=_Accepting(), sample_rate=0.3,
            rng=random.Random(11),
        )
        for _ in range(2)
    ]  # fmt: skip
    one_by_one = [
        loggers[0].log(features={}, prediction=1, latency_seconds=0, event_id=i) is not None
        for i in given
    ]
    together = loggers[1].log_many(
        features=[{}] * len(given), predictions=[1] * len(given), latency_seconds=0,
        event_ids=given,  # type: ignore[arg-type]
    )  # fmt: skip
    for logger in loggers:
        logger.close()
    assert [eid is not None for eid in together] == one_by_one
    assert loggers[1].stats() == loggers[0].stats()


def test_log_many_overflow_drops_the_oldest() -> None:
    """Rows beyond the buffer's room push out the oldest events, each counted as dropped."""
    transport = _Accepting()
    logger = PredictionLogger(
        model="m", version="1", transport=transport, max_buffer=4, batch_size=4
    )
    _log(logger, 3, prefix="old")
    logger.log_many(
        features=[{}] * 6,
        predictions=[0] * 6,
        latency_seconds=0,
        event_ids=[f"new{i}" for i in range(6)],
    )
    logger.close()
    stats = logger.stats()
    _settled(stats)
    assert (stats.logged, stats.dropped, stats.sent) == (9, 5, 4)
    assert [e["id"] for e in _wire_events(transport)] == ["new2", "new3", "new4", "new5"]


def test_unencodable_value_is_rejected_without_raising() -> None:
    """A value JSON cannot hold is counted rejected and reported once; log() still returns."""
    log = RecordingLog()
    transport = _Accepting()
    logger = PredictionLogger(model="m", version="1", transport=transport, logger=log)
    assert logger.log(features={"x": object()}, prediction=1, latency_seconds=0.1) is not None
    logger.close()
    stats = logger.stats()
    assert (stats.logged, stats.rejected, stats.sent) == (1, 1, 0)
    assert log.count("not valid JSON") == 1


def test_internal_error_is_counted_dropped_without_raising() -> None:
    """An exception inside log() (here from the sampler) is counted dropped, never raised."""

    class Broken(random.Random):
        def random(self) -> float:
            raise RuntimeError("boom")

    log = RecordingLog()
    logger = PredictionLogger(
        model="m", version="1", transport=_Accepting(), sample_rate=0.5, rng=Broken(), logger=log
    )
    logger.log(features={}, prediction=1, latency_seconds=0.1)
    logger.close()
    stats = logger.stats()
    assert (stats.logged, stats.dropped) == (1, 1)
    assert log.count("internal error in log(): RuntimeError: boom") == 1


def test_log_after_close_is_counted_dropped() -> None:
    """Events logged after close() are not sent; they are counted dropped."""
    log = RecordingLog()
    logger = PredictionLogger(model="m", version="1", transport=_Accepting(), logger=log)
    logger.close()
    assert logger.log(features={}, prediction=1, latency_seconds=0.1, event_id="late") == "late"
    stats = logger.stats()
    assert (stats.logged, stats.dropped, stats.buffered) == (1, 1, 0)
    assert log.count("log() after close()") == 1


@pytest.mark.parametrize(
    "event",
    [
        {"id": "a", "latency_seconds": float("nan"), "features": {"x": float("inf")}},
        {"id": "b", "features": {"x": np.float32(1.5), "n": np.int64(3)}, "prediction": [1, 2]},
        {"id": "c", "scores": {0: 0.5, 1: 0.5}, "prediction": np.array([0.25, float("nan")])},
        {"id": "d", "features": {"s": "é", "none": None, "flag": True}, "prediction": 1e300},
    ],
)
def test_stdlib_json_fallback_matches_orjson(event: dict[str, Any]) -> None:
    """Without orjson, events encode to the same JSON value (non-finite floats become null)."""
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    assert json.loads(encode_json(event)) == orjson.loads(orjson.dumps(event, option=options))


@pytest.mark.parametrize(
    "event",
    [
        {"id": "b", "features": {"x": np.float32(1.5), "n": np.int64(3)}, "prediction": [1, 2]},
        {"id": "c", "scores": {0: 0.5, 1: 0.5}, "prediction": np.array([0.25, float("nan")])},
        {"id": "e", "features": MappingProxyType({"x": 1.0}), "prediction": frozenset({7})},
        {"id": "f", "features": {"x": float("nan")}, "prediction": 1},
    ],
)
def test_orjson_encoding_equals_the_one_with_every_option(event: dict[str, Any]) -> None:
    """Events needing numpy, non-str keys or a Mapping encode as with orjson's options always on."""
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    expected = orjson.dumps(event, default=_client_encoding._default, option=options)
    assert _client_encoding.encode_event(event) == expected


def test_an_event_with_an_integer_json_cannot_hold_is_rejected() -> None:
    """An integer past 64 bits fails the plain and the optioned encoding, so it is rejected."""
    logger = PredictionLogger(model="m", version="1", transport=_Accepting())
    logger.log_many(features=[{"x": 2**70}, {"x": 1}], predictions=[1, 2], latency_seconds=0.1)
    stats = logger.stats()
    assert (stats.logged, stats.rejected, stats.buffered) == (2, 1, 1)


def test_import_needs_the_standard_library_only() -> None:
    """Importing sidecar.client pulls in no third-party package besides (optional) orjson."""
    code = (
        "import sys, sidecar.client\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(roots - set(sys.stdlib_module_names) - {'sidecar', 'orjson', '__main__'}"
        " - {r for r in roots if r.startswith('_')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_works_without_orjson() -> None:
    """With orjson not importable, the logger falls back to json and still delivers."""
    code = """
import sys
sys.modules["orjson"] = None  # makes "import orjson" fail
from sidecar import _client_encoding
from sidecar._client_transport import TransportResponse
from sidecar.client import PredictionLogger
assert _client_encoding.encode_event is _client_encoding.encode_json
bodies = []
class Keep:
    def send(self, body, timeout):
        bodies.append(body)
        return TransportResponse(202, b'{"accepted": 1, "rejected": [{"index": 1}]}')
logger = PredictionLogger(model="m", version="1", transport=Keep())
logger.log(features={"x": float("nan")}, prediction=1, latency_seconds=0.1, event_id="a")
logger.log(features={}, prediction=2, latency_seconds=0.1, event_id="b")
logger.close()
stats = logger.stats()
assert (stats.sent, stats.rejected) == (1, 1), stats
assert b'"x":null' in bodies[0], bodies
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- sampling


def test_sampling_rate_within_binomial_bounds() -> None:
    """Without ids, the share of events kept is Binomial(n, sample_rate)."""
    n, rate = 20_000, 0.25
    logger = PredictionLogger(
        model="m",
        version="1",
        transport=_Accepting(),
        sample_rate=rate,
        max_buffer=n,
        rng=random.Random(11),
    )
    results = [logger.log(features={}, prediction=1, latency_seconds=0.1) for _ in range(n)]
    logger.close()
    kept = sum(r is not None for r in results)
    low, high = scipy_stats.binom.interval(1 - CONFIDENCE, n, rate)
    assert low <= kept <= high
    stats = logger.stats()
    _settled(stats)
    assert (stats.sampled_out, stats.sent) == (n - kept, kept)


def test_sampling_is_deterministic_per_event_id() -> None:
    """Two loggers (two replicas) keep the same ids, at the rate, by the documented hash."""
    n, rate = 5_000, 0.3
    ids = [f"req-{i}" for i in range(n)]
    kept = []
    for seed in (1, 2):
        logger = PredictionLogger(
            model="m",
            version="1",
            transport=_Accepting(),
            sample_rate=rate,
            max_buffer=n,
            rng=random.Random(seed),
        )
        kept.append(
            [logger.log(features={}, prediction=1, latency_seconds=0, event_id=i) for i in ids]
        )
        again = [logger.log(features={}, prediction=1, latency_seconds=0, event_id=i) for i in ids]
        assert again == kept[-1]
        logger.close()
    assert kept[0] == kept[1]
    decided = [
        i
        if int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") < rate * 2**64
        else None
        for i in ids
    ]
    assert kept[0] == decided
    low, high = scipy_stats.binom.interval(1 - CONFIDENCE, n, rate)
    assert low <= sum(k is not None for k in kept[0]) <= high


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("model", ""),
        ("version", 3),
        ("url", "ftp://host"),
        ("url", "http://"),
        ("url", "http://host:99999"),
        ("token", "two words"),
        ("token", ""),
        ("max_buffer", 0),
        ("batch_size", 0),
        ("batch_size", 20_000),
        ("batch_size", True),
        ("flush_interval", 0),
        ("flush_interval", math.inf),
        ("timeout", -1.0),
        ("max_backoff", math.nan),
        ("sample_rate", 0.0),
        ("sample_rate", 1.5),
    ],
)
def test_bad_argument_is_named(argument: str, value: object) -> None:
    """A bad constructor argument raises ValueError naming it."""
    kwargs: dict[str, Any] = {"model": "m", "version": "1", argument: value}
    with pytest.raises(ValueError, match=rf"\b{argument}: "):
        PredictionLogger(**kwargs)


def test_every_bad_argument_is_named_at_once() -> None:
    """Several bad arguments are reported together."""
    with pytest.raises(ValueError, match=r"max_buffer: .*timeout: .*sample_rate: "):
        PredictionLogger(model="m", version="1", max_buffer=0, timeout=0, sample_rate=2)


# --------------------------------------------------------------------------- metrics


def test_metrics_are_born_at_zero_and_follow_the_stats() -> None:
    """Every outcome series exists from construction and reads the stats at scrape time."""
    registry = CollectorRegistry()
    logger = PredictionLogger(
        model="m", version="1", transport=_Accepting(), registry=registry, sample_rate=0.5,
        rng=random.Random(3), max_buffer=100, batch_size=100,
    )  # fmt: skip
    model = {"model": "m", "version": "1"}
    for outcome in ("sent", "dropped", "rejected"):
        assert (
            registry.get_sample_value(
                "modelwatch_logger_events_total", {**model, "outcome": outcome}
            )
            == 0
        )
    assert registry.get_sample_value("modelwatch_logger_buffer_capacity_events", model) == 100
    for _ in range(40):
        logger.log(features={}, prediction=1, latency_seconds=0.1)
    stats = logger.stats()
    assert registry.get_sample_value("modelwatch_logger_buffer_events", model) == stats.buffered > 0
    assert (
        registry.get_sample_value("modelwatch_logger_sampled_out_total", model) == stats.sampled_out
    )
    logger.close()
    assert (
        registry.get_sample_value("modelwatch_logger_events_total", {**model, "outcome": "sent"})
        == logger.stats().sent
        == stats.buffered
    )


def test_every_metric_series_carries_the_model_and_version() -> None:
    """Each ``modelwatch_logger_*`` sample is labelled with the logger's model and version."""
    registry = CollectorRegistry()
    PredictionLogger(model="tumour", version="7", transport=_Accepting(), registry=registry)
    samples = [
        sample
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith("modelwatch_logger_")
    ]
    assert {s.name for s in samples} == {
        "modelwatch_logger_events_total",
        "modelwatch_logger_buffer_events",
        "modelwatch_logger_buffer_capacity_events",
        "modelwatch_logger_sampled_out_total",
    }
    assert all((s.labels["model"], s.labels["version"]) == ("tumour", "7") for s in samples)


def test_metrics_pass_promtool() -> None:
    """The logger's exposition passes ``promtool check metrics``."""
    registry = CollectorRegistry()
    logger = PredictionLogger(model="m", version="1", transport=_Accepting(), registry=registry)
    _log(logger, 3)
    result = promtool_check_metrics(generate_latest(registry))
    logger.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_second_logger_on_one_registry_is_refused() -> None:
    """Two loggers cannot share a registry: their series would collide."""
    registry = CollectorRegistry()
    PredictionLogger(model="m", version="1", transport=_Accepting(), registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PredictionLogger(model="m", version="2", transport=_Accepting(), registry=registry)


# --------------------------------------------------------------------------- real sidecar


@contextmanager
def _real_sidecar(tmp_path: Path, token: str | None = None) -> Iterator[Sidecar]:
    rng = np.random.default_rng(5)
    profile = make_profile(
        numeric={"x": rng.normal(0, 1, 1000)},
        categorical={"colour": rng.choice(["red", "blue"], 1000).tolist()},
        prediction=rng.choice(["0", "1"], 1000).tolist(),
        prediction_kind="categorical",
    )
    path = tmp_path / "m.json"
    dump_profile(profile, path)
    env = {} if token is None else {env_key("ingest_token"): token}
    settings = Settings.from_sources(
        env,
        {
            "profiles": [str(path)],
            "ingest_addr": "127.0.0.1:0",
            "metrics_addr": "127.0.0.1:0",
            **dirs_overrides(tmp_path),
        },
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sidecar = Sidecar(settings, [profile], logger=get_logger())
    try:
        asyncio.run_coroutine_threadsafe(sidecar.start(), loop).result(30)
        yield sidecar
    finally:
        asyncio.run_coroutine_threadsafe(sidecar.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def test_events_reach_the_real_sidecar(tmp_path: Path) -> None:
    """Against the real ingest app, sent events are counted there and a bad one is rejected."""
    with _real_sidecar(tmp_path, token=TOKEN) as sidecar:
        url = f"http://127.0.0.1:{sidecar.ingest_port}"
        logger = PredictionLogger(model="m", version="1", url=url, token=TOKEN, batch_size=50)
        logger.start()
        for i in range(300):
            logger.log(
                features={"x": float(i % 7) - 3.0, "colour": "red" if i % 2 else "blue"},
                prediction=str(i % 2),
                latency_seconds=0.002,
                status="ok" if i % 10 else "error",
            )
        logger.log(features={"x": 0.0}, prediction="1", latency_seconds=math.nan)
        logger.close()
        stats = logger.stats()
        _settled(stats)
        assert (stats.sent, stats.rejected) == (300, 1)
        assert sidecar.counters.events_accepted == 300
        assert sidecar.counters.events_received == 301

        intruder = PredictionLogger(model="m", version="1", url=url, token=TOKEN + "x")
        intruder.log(features={"x": 0.0}, prediction="1", latency_seconds=0.1)
        intruder.close()
        assert intruder.stats().rejected == 1
        assert sidecar.counters.requests_rejected["unauthorized"] == 1


def test_unknown_model_is_rejected_by_the_real_sidecar(tmp_path: Path) -> None:
    """A model the sidecar does not serve gets 404; those events are rejected, not retried."""
    log = RecordingLog()
    with _real_sidecar(tmp_path) as sidecar:
        url = f"http://127.0.0.1:{sidecar.ingest_port}"
        logger = PredictionLogger(
            model="nope", version="1", url=url, batch_size=5, flush_interval=3600, logger=log
        )
        _log(logger, 20)  # not started: close() sends four batches of five
        logger.close()
        assert sidecar.counters.requests_rejected["unknown_model"] == 4
    stats = logger.stats()
    _settled(stats)
    assert (stats.rejected, stats.sent) == (20, 0)
    assert log.count("404 unknown_model") == 1
