"""The shipper against an in-memory spool and scripted sinks: batching, retries, dead letters."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from sidecar._dead_letter import DeadLetterFile
from sidecar._shipping_metrics import ShippingCollector, ShippingStats
from sidecar.documents import Document, DocumentBuilder
from sidecar.logs import get_logger
from sidecar.shipper import Shipper, ShipperConfig, backoff_delay
from sidecar.sinks import DELIVERED, DUPLICATE, ItemResult, Outcome
from sidecar.snapshot import DriftSnapshot, FeatureDrift
from sidecar.spool import SpoolPosition, SpoolRecord, SpoolStats
from sidecar.spool_records import encode_batch
from tests.support.tools import promtool_check_metrics

FAST = ShipperConfig(base_backoff_seconds=0.001, max_backoff_seconds=0.002, idle_seconds=0.05)


def _body(ids: Sequence[str]) -> bytes:
    events = [
        {
            "id": i,
            "timestamp": "2026-01-01T00:00:00Z",
            "latency_seconds": 0.01,
            "features": {"x": 1.0},
            "prediction": 0.5,
        }
        for i in ids
    ]
    return orjson.dumps({"model": "m", "version": "1", "events": events})


class FakeSpool:
    """Records in memory, positions (0, n) for the n-th record, commits remembered."""

    def __init__(self, payloads: Sequence[bytes] = (), committed: SpoolPosition | None = None):
        self.records: list[SpoolRecord] = []
        self.commits: list[SpoolPosition] = []
        self._committed = committed
        self.lock = threading.Lock()
        for payload in payloads:
            self.append(payload)

    def append(self, payload: bytes) -> None:
        with self.lock:
            position = SpoolPosition(0, len(self.records) + 1)
            self.records.append(SpoolRecord(position, payload, 1_700_000_000.0))

    def append_ids(self, ids: Sequence[str], rejected: Sequence[int] = ()) -> None:
        self.append(encode_batch("m", "1", 1_700_000_000.0, _body(ids), rejected))

    def read(
        self, after: SpoolPosition | None, *, max_records: int, max_bytes: int
    ) -> list[SpoolRecord]:
        start = 0 if after is None else after.offset
        with self.lock:
            out: list[SpoolRecord] = []
            size = 0
            for record in self.records[start:]:
                if out and (len(out) >= max_records or size + len(record.payload) > max_bytes):
                    break
                out.append(record)
                size += len(record.payload)
            return out

    def committed(self) -> SpoolPosition | None:
        return self._committed

    def commit(self, position: SpoolPosition) -> None:
        self._committed = position
        self.commits.append(position)

    def stats(self) -> SpoolStats:
        return SpoolStats(
            bytes=123, segments=1, records_dropped=0, corrupt_segments=2, oldest_written_at=90.0
        )


class ScriptedSink:
    """Answers each send with ``answer(document, attempt_of_that_document)``; records calls."""

    def __init__(self, answer: Callable[[Document, int], ItemResult] | None = None) -> None:
        self.answer = answer or (lambda _doc, _n: DELIVERED)
        self.sends: list[list[str]] = []
        self.attempts: dict[str, int] = {}
        self.stored: dict[str, Document] = {}

    def send(self, documents: Sequence[Document]) -> list[ItemResult]:
        self.sends.append([d.id for d in documents])
        results = []
        for doc in documents:
            n = self.attempts.get(doc.id, 0)
            self.attempts[doc.id] = n + 1
            result = self.answer(doc, n)
            if result.outcome is Outcome.DELIVERED:
                if doc.id in self.stored:
                    result = DUPLICATE
                self.stored[doc.id] = doc
            results.append(result)
        return results

    def close(self) -> None:
        pass


def _shipper(
    spool: FakeSpool,
    sink: ScriptedSink,
    tmp_path: Path,
    config: ShipperConfig = FAST,
    rand: Callable[[], float] = lambda: 0.5,
) -> Shipper:
    return Shipper(
        spool,
        sink,
        DocumentBuilder(),
        dead_letter=DeadLetterFile(tmp_path / "dead-letter", wall_clock=lambda: 1_700_000_000.0),
        logger=get_logger(),
        config=config,
        rand=rand,
    )


def _dead_lines(tmp_path: Path) -> list[dict[str, object]]:
    files = sorted((tmp_path / "dead-letter").glob("*.ndjson"))
    return [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]


def test_delivered_documents_commit_the_last_record(tmp_path: Path) -> None:
    """Every document delivered: the position after the last record is committed, all shipped."""
    spool = FakeSpool()
    spool.append_ids(["a", "b"])
    spool.append_ids(["c"])
    sink = ScriptedSink()
    shipper = _shipper(spool, sink, tmp_path)
    assert shipper.ship_once()
    assert sorted(sink.stored) == ["a", "b", "c"]
    assert spool.committed() == SpoolPosition(0, 2)
    assert shipper.stats.outcomes() == {"shipped": 3, "retried": 0, "failed": 0, "dropped": 0}
    assert not shipper.ship_once()


def test_rejected_events_of_a_request_are_not_shipped(tmp_path: Path) -> None:
    """Events the parser rejected (indices in the record header) never become documents."""
    spool = FakeSpool()
    spool.append_ids(["a", "bad", "c"], rejected=[1])
    sink = ScriptedSink()
    _shipper(spool, sink, tmp_path).ship_once()
    assert sorted(sink.stored) == ["a", "c"]


def test_only_retried_items_are_resent(tmp_path: Path) -> None:
    """A partial bulk failure resends just the RETRY items, and commits once they land."""
    spool = FakeSpool()
    spool.append_ids(["a", "b", "c", "d"])

    def answer(doc: Document, attempt: int) -> ItemResult:
        if doc.id in ("b", "d") and attempt < 2:
            return ItemResult(Outcome.RETRY, "429 too many requests")
        return DELIVERED

    sink = ScriptedSink(answer)
    shipper = _shipper(spool, sink, tmp_path)
    shipper.ship_once()
    assert sink.sends == [["a", "b", "c", "d"], ["b", "d"], ["b", "d"]]
    assert spool.commits == [SpoolPosition(0, 1)]
    assert shipper.stats.outcomes() == {"shipped": 4, "retried": 4, "failed": 0, "dropped": 0}


def test_dead_documents_go_to_the_dead_letter_file(tmp_path: Path) -> None:
    """A document refused for good is dead-lettered with its reason and does not block others."""
    spool = FakeSpool()
    spool.append_ids(["a", "bad"])
    spool.append_ids(["c"])

    def answer(doc: Document, _attempt: int) -> ItemResult:
        if doc.id == "bad":
            return ItemResult(Outcome.DEAD, "mapper_parsing_exception: failed to parse [x]")
        return DELIVERED

    sink = ScriptedSink(answer)
    shipper = _shipper(spool, sink, tmp_path)
    shipper.ship_once()
    assert sorted(sink.stored) == ["a", "c"]
    assert spool.committed() == SpoolPosition(0, 2)
    [line] = _dead_lines(tmp_path)
    assert line["id"] == "bad"
    assert line["reason"] == "mapper_parsing_exception: failed to parse [x]"
    assert line["index"] == "logs-modelwatch.predictions-default"
    assert isinstance(line["document"], dict)
    assert line["document"]["event"]["id"] == "bad"
    assert line["@timestamp"] == "2023-11-14T22:13:20.000Z"
    assert shipper.stats.outcomes()["failed"] == 1
    assert shipper.stats.snapshot()[1] == 1


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _record_with(change: dict[str, object]) -> bytes:
    """A spool record of one event with ``change`` applied to it."""
    body = orjson.loads(_body(["bad"]))
    body["events"][0].update(change)
    return encode_batch("m", "1", 1_700_000_000.0, json.dumps(body).encode(), ())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not a record", "header"),
        # Spooled before ingest bounded latency: decoding the record now refuses it.
        (_record_with({"latency_seconds": 1e300}), "must be at most 1e+09 seconds"),
        # Valid to the checker, but no document can hold its labels.
        (_record_with({"attributes": {"deep": _nested(300)}}), "could not be built: "),
    ],
    ids=["undecodable", "latency beyond nanoseconds", "attributes nested too deep"],
)
def test_record_that_cannot_be_shipped_is_dead_lettered(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    """A record that cannot be decoded or built into documents is dead-lettered; the next ships."""
    spool = FakeSpool()
    spool.append(payload)
    spool.append_ids(["a"])
    sink = ScriptedSink()
    shipper = _shipper(spool, sink, tmp_path)
    shipper.ship_once()
    assert list(sink.stored) == ["a"]
    assert spool.committed() == SpoolPosition(0, 2)
    [line] = _dead_lines(tmp_path)
    assert line["record"] == payload.decode()
    assert reason in str(line["reason"])
    assert shipper.stats.snapshot()[1] == 1


def test_bulk_requests_are_bounded_by_documents(tmp_path: Path) -> None:
    """Seven documents with batch_docs=3 go out as 3, 3 and 1, committing record by record."""
    spool = FakeSpool()
    spool.append_ids(["a", "b"])
    spool.append_ids(["c", "d", "e", "f", "g"])
    sink = ScriptedSink()
    config = ShipperConfig(batch_docs=3, base_backoff_seconds=0.001)
    _shipper(spool, sink, tmp_path, config).ship_once()
    assert [len(s) for s in sink.sends] == [3, 3, 1]
    assert spool.commits == [SpoolPosition(0, 1), SpoolPosition(0, 2)]


def test_bulk_requests_are_bounded_by_bytes(tmp_path: Path) -> None:
    """A byte bound smaller than two documents sends them one per bulk request."""
    spool = FakeSpool()
    spool.append_ids(["a", "b", "c"])
    sink = ScriptedSink()
    size = len(spool.records[0].payload)
    config = ShipperConfig(batch_bytes=size // 2, base_backoff_seconds=0.001)
    _shipper(spool, sink, tmp_path, config).ship_once()
    assert sink.sends == [["a"], ["b"], ["c"]]


def test_restart_resumes_after_the_committed_position(tmp_path: Path) -> None:
    """A shipper built on a spool with a committed position ships only the records after it."""
    spool = FakeSpool()
    spool.append_ids(["a"])
    spool.append_ids(["b"])
    spool._committed = SpoolPosition(0, 1)
    sink = ScriptedSink()
    _shipper(spool, sink, tmp_path).ship_once()
    assert list(sink.stored) == ["b"]


def test_backoff_is_full_jitter_capped() -> None:
    """The delay is uniform below min(cap, base * 2**attempt): rand scales that ceiling."""
    assert backoff_delay(0, 0.5, 30.0, lambda: 0.5) == 0.25
    assert backoff_delay(3, 0.5, 30.0, lambda: 0.5) == 2.0
    assert backoff_delay(10, 0.5, 30.0, lambda: 0.5) == 15.0
    assert backoff_delay(10_000, 0.5, 30.0, lambda: 1.0) == 30.0
    assert backoff_delay(2, 0.5, 30.0, lambda: 0.0) == 0.0


def test_stop_interrupts_a_backoff_wait(tmp_path: Path) -> None:
    """With the sink down and an hour-long backoff, stop() still ends the thread promptly."""
    spool = FakeSpool()
    spool.append_ids(["a"])
    sink = ScriptedSink(lambda _d, _n: ItemResult(Outcome.RETRY, "connection refused"))
    config = ShipperConfig(base_backoff_seconds=3600.0, max_backoff_seconds=3600.0)
    shipper = _shipper(spool, sink, tmp_path, config, rand=lambda: 1.0)
    shipper.start()
    _wait_for(lambda: len(sink.sends) >= 1)
    assert shipper.stop(timeout=10.0)
    assert spool.commits == []
    assert shipper.stats.outcomes()["retried"] == 1


def test_thread_ships_new_records_after_notify(tmp_path: Path) -> None:
    """A running shipper picks up records appended later once notified, then stops cleanly."""
    spool = FakeSpool()
    sink = ScriptedSink()
    config = ShipperConfig(idle_seconds=3600.0)
    shipper = _shipper(spool, sink, tmp_path, config)
    shipper.start()
    spool.append_ids(["a"])
    shipper.notify()
    _wait_for(lambda: "a" in sink.stored)
    spool.append_ids(["b"])
    shipper.notify()
    _wait_for(lambda: spool.committed() == SpoolPosition(0, 2))
    assert shipper.stop(timeout=10.0)


def test_stop_drains_what_is_spooled_while_the_sink_answers(tmp_path: Path) -> None:
    """Records spooled before stop() are shipped before the thread ends when the sink is up."""
    spool = FakeSpool()
    for n in range(5):
        spool.append_ids([f"e{n}"])
    sink = ScriptedSink()
    shipper = _shipper(spool, sink, tmp_path, ShipperConfig(batch_bytes=1))
    shipper.start()
    assert shipper.stop(timeout=10.0)
    assert spool.committed() == SpoolPosition(0, 5)


def _drift(model: str = "m") -> DriftSnapshot:
    feature = FeatureDrift("x", "numeric", 10, 0.1, "ks", 0.2, 0.3, 0.6, False, 0.0)
    return DriftSnapshot(model, "1", 5.0, 3600.0, 10, "bonferroni", 0.05, (feature,), None)


def test_drift_snapshots_are_shipped_through_the_sink(tmp_path: Path) -> None:
    """A queued drift round becomes one document per feature plus one per model in the sink."""
    spool = FakeSpool()
    sink = ScriptedSink()
    shipper = _shipper(spool, sink, tmp_path)
    shipper.offer_drift([_drift()], 1_700_000_000.0)
    assert shipper.ship_once()
    docs = list(sink.stored.values())
    assert [d.index for d in docs] == ["metrics-modelwatch.drift-default"] * 2
    assert shipper.stats.outcomes()["shipped"] == 2


def test_drift_queue_drops_the_oldest_round_when_full(tmp_path: Path) -> None:
    """Past ``drift_queue`` rounds the oldest is dropped and its documents counted as dropped."""
    spool = FakeSpool()
    sink = ScriptedSink()
    shipper = _shipper(spool, sink, tmp_path, ShipperConfig(drift_queue=2))
    for n in range(3):
        shipper.offer_drift([_drift()], 1_700_000_000.0 + n)
    assert shipper.stats.outcomes()["dropped"] == 2
    shipper.ship_once()
    assert len(sink.stored) == 4


def test_collector_exports_outcomes_from_zero_and_passes_promtool(tmp_path: Path) -> None:
    """Outcome series exist at 0 before any traffic and the exposition is promtool-clean."""
    spool = FakeSpool()
    stats = ShippingStats()
    registry = CollectorRegistry()
    registry.register(ShippingCollector(stats, spool.stats, wall_clock=lambda: 100.0))
    for outcome in ("shipped", "retried", "failed", "dropped"):
        value = registry.get_sample_value("modelwatch_es_documents_total", {"outcome": outcome})
        assert value == 0.0
    stats.bulk(0.02, answered=True, wall_time=50.0)
    assert registry.get_sample_value("modelwatch_es_last_success_timestamp_seconds") == 50.0
    assert registry.get_sample_value("modelwatch_es_bulk_duration_seconds_count") == 1.0
    assert (
        registry.get_sample_value("modelwatch_es_bulk_duration_seconds_bucket", {"le": "0.025"})
        == 1.0
    )
    assert registry.get_sample_value("modelwatch_spool_bytes") == 123.0
    assert registry.get_sample_value("modelwatch_spool_oldest_event_age_seconds") == 10.0
    assert registry.get_sample_value("modelwatch_spool_corrupt_segments_total") == 2.0
    result = promtool_check_metrics(generate_latest(registry))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met before the deadline")
        time.sleep(0.005)


class RaisingSink(ScriptedSink):
    """Raises on the first ``failures`` sends, then behaves as a scripted sink."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send(self, documents: Sequence[Document]) -> list[ItemResult]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("sink down")
        return super().send(documents)


def test_drift_rounds_survive_a_sink_that_raises(tmp_path: Path) -> None:
    """A sink raising on a drift send keeps the rounds queued; the next attempt ships them."""
    sink = RaisingSink(failures=1)
    shipper = _shipper(FakeSpool(), sink, tmp_path)
    shipper.offer_drift([_drift()], 1_700_000_000.0)
    with pytest.raises(ConnectionError):
        shipper.ship_once()
    assert shipper.ship_once()
    assert len(sink.stored) == 2
    assert shipper.stats.outcomes()["dropped"] == 0


def test_requeued_drift_rounds_respect_the_queue_bound(tmp_path: Path) -> None:
    """Rounds put back after a raising send drop (and count) the oldest past ``drift_queue``."""
    sink = RaisingSink(failures=1)
    shipper = _shipper(FakeSpool(), sink, tmp_path, ShipperConfig(drift_queue=2))
    shipper.offer_drift([_drift()], 1_700_000_000.0)
    shipper.offer_drift([_drift()], 1_700_000_001.0)
    original_send = sink.send

    def send_while_more_arrive(documents: Sequence[Document]) -> list[ItemResult]:
        shipper.offer_drift([_drift()], 1_700_000_002.0)  # arrives during the failing send
        return original_send(documents)

    sink.send = send_while_more_arrive  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        shipper.ship_once()
    assert shipper.stats.outcomes()["dropped"] == 2


class FailingBuilder(DocumentBuilder):
    """A builder whose drift documents cannot be built."""

    def drift(self, snapshot: DriftSnapshot, wall_time: float) -> list[Document]:
        raise ValueError("cannot build")


def test_drift_rounds_the_builder_cannot_build_are_counted_dropped(tmp_path: Path) -> None:
    """A builder raising on drift counts the round's documents dropped and the spool still ships."""
    spool = FakeSpool()
    spool.append_ids(["a"])
    sink = ScriptedSink()
    shipper = Shipper(
        spool,
        sink,
        FailingBuilder(),
        dead_letter=DeadLetterFile(tmp_path / "dead-letter", wall_clock=lambda: 1_700_000_000.0),
        logger=get_logger(),
        config=FAST,
    )
    shipper.offer_drift([_drift(), _drift("n")], 1_700_000_000.0)
    assert shipper.ship_once()
    assert shipper.stats.outcomes()["dropped"] == 4
    assert sorted(sink.stored) == ["a"]
    assert not shipper.ship_once()
