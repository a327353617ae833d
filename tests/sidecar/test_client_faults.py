"""The prediction logger when the sidecar is down, killed, restarting, slow or refusing.

Every test runs the logger's real HTTP transport against ``FakeSidecar`` on a loopback socket,
waits on conditions (never on time), and checks the accounting exactly: every ``log()`` call
returns, and ``sent + dropped + rejected + sampled_out == logged`` once the logger is closed.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest

from sidecar._client_transport import HttpTransport, TransportResponse
from sidecar.client import LoggerStats, PredictionLogger
from tests.support.fake_sidecar import (
    FakeSidecar,
    RecordingLog,
    Reply,
    accept,
    chaos,
    refuse,
    reject_where,
    wait_for,
)

BACKOFF = 0.02
"""Short backoff so retries come quickly."""
NEVER = 3600.0
"""A flush interval that never passes in a test: batches go by count or at close only."""


class CountingTransport:
    """The real HTTP transport, counting attempts and failures so tests can wait on them."""

    def __init__(self, url: str) -> None:
        self.inner = HttpTransport(url)
        self.calls = 0
        self.failures = 0
        self.closed = False

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        self.calls += 1
        try:
            return self.inner.send(body, timeout)
        except Exception:
            self.failures += 1
            raise

    def close(self) -> None:
        self.inner.close()
        self.closed = True


def _log(logger: PredictionLogger, n: int, prefix: str = "e") -> list[str]:
    """Log ``n`` events; each call must return its id (it cannot block or raise)."""
    ids = [f"{prefix}{i}" for i in range(n)]
    for event_id in ids:
        returned = logger.log(
            features={"x": 1.0}, prediction=1, latency_seconds=0.01, event_id=event_id
        )
        assert returned == event_id
    return ids


def _settled(stats: LoggerStats) -> None:
    assert stats.sent + stats.dropped + stats.rejected + stats.sampled_out == stats.logged
    assert stats.buffered == stats.in_flight == 0


def _hold(_: dict[str, Any]) -> Reply:
    return Reply(hold=True)


def test_sidecar_down_from_the_start_buffers_without_dropping() -> None:
    """While the sidecar is down and the buffer has room, nothing is dropped; all arrive later."""
    fake = FakeSidecar()
    transport = CountingTransport(fake.url)
    logger = PredictionLogger(
        model="m",
        version="1",
        transport=transport,
        max_buffer=50,
        batch_size=10,
        max_backoff=BACKOFF,
        flush_interval=NEVER,
    )
    logger.start()
    ids = _log(logger, 30)
    wait_for(lambda: transport.failures >= 3)
    stats = logger.stats()
    assert stats.dropped == 0
    assert stats.buffered + stats.in_flight == 30
    with fake.start():
        fake.wait_until(lambda: logger.stats().sent == 30)
        logger.close()
    assert fake.accepted == ids
    _settled(logger.stats())
    assert logger.stats().sent == 30


def test_full_buffer_drops_the_oldest_first() -> None:
    """With the sidecar down, a full buffer drops its oldest events; the newest are delivered."""
    fake = FakeSidecar()
    transport = CountingTransport(fake.url)
    logger = PredictionLogger(
        model="m",
        version="1",
        transport=transport,
        max_buffer=20,
        batch_size=10,
        max_backoff=BACKOFF,
        flush_interval=NEVER,
    )
    logger.start()
    ids = _log(logger, 100)

    def holding_newest() -> bool:
        stats = logger.stats()
        return transport.failures >= 1 and stats.in_flight == 0 and stats.buffered == 20

    wait_for(holding_newest)
    assert logger.stats().dropped == 80
    with fake.start():
        logger.close(timeout=10)
    assert fake.accepted == ids[80:]
    stats = logger.stats()
    _settled(stats)
    assert (stats.sent, stats.dropped) == (20, 80)


def test_log_never_blocks_while_a_send_is_held() -> None:
    """While the flusher waits on a held request, log() keeps returning and only overflows drop."""
    with FakeSidecar(_hold) as fake:
        logger = PredictionLogger(
            model="m",
            version="1",
            url=fake.url,
            max_buffer=100,
            batch_size=10,
            timeout=30,
            max_backoff=BACKOFF,
            flush_interval=NEVER,
        )
        logger.start()
        first = _log(logger, 10)
        fake.wait_until(lambda: fake.held == 1)
        more = _log(logger, 150, "m")  # returns although the flusher is stuck
        stats = logger.stats()
        assert (stats.in_flight, stats.buffered, stats.dropped) == (10, 100, 50)
        fake.behaviour = accept
        fake.release()
        logger.close(timeout=10)
    assert fake.accepted == first + more[50:]
    stats = logger.stats()
    _settled(stats)
    assert (stats.sent, stats.dropped) == (110, 50)


def test_sidecar_killed_mid_request_resends_the_unanswered_batch() -> None:
    """A batch cut off without an answer is sent again once the sidecar is back; none is lost."""
    fake = FakeSidecar(_hold).start()
    logger = PredictionLogger(
        model="m",
        version="1",
        url=fake.url,
        batch_size=10,
        timeout=30,
        max_backoff=BACKOFF,
        flush_interval=NEVER,
    )
    logger.start()
    first = _log(logger, 10)
    fake.wait_until(lambda: fake.held == 1)
    fake.behaviour = accept
    fake.stop()  # the held request dies without an answer
    more = _log(logger, 25, "f")
    with fake.start():
        logger.close(timeout=10)
    stats = logger.stats()
    _settled(stats)
    assert (stats.sent, stats.dropped) == (35, 0)
    assert sorted(fake.accepted) == sorted(first + more)
    assert fake.requests[0] == first
    assert first in fake.requests[1:]  # the ambiguous batch was re-sent


def test_restarting_sidecar_loses_nothing() -> None:
    """Restarts between and during deliveries lose no event and count each once."""
    fake = FakeSidecar().start()
    logger = PredictionLogger(
        model="m", version="1", url=fake.url, batch_size=20, max_backoff=0.02, flush_interval=0.005
    )
    logger.start()
    ids: list[str] = []
    for round_ in range(4):
        wanted = len(fake.requests) + 2
        ids += _log(logger, 200, f"r{round_}-")
        fake.wait_until(lambda: len(fake.requests) >= wanted)  # noqa: B023 - used at once
        fake.restart()
    logger.close(timeout=10)
    fake.stop()
    stats = logger.stats()
    _settled(stats)
    assert (stats.sent, stats.dropped, stats.rejected) == (800, 0, 0)
    assert set(fake.accepted) == set(ids)


def test_connection_closed_between_batches_is_reopened_without_a_failure() -> None:
    """A kept-alive connection the sidecar closed while idle is replaced, not counted a failure."""
    with FakeSidecar() as fake:
        transport = CountingTransport(fake.url)
        logger = PredictionLogger(
            model="m", version="1", transport=transport, batch_size=5, flush_interval=NEVER
        )
        logger.start()
        _log(logger, 5, "a")
        fake.wait_until(lambda: logger.stats().sent == 5)
        fake.restart()  # closes the idle connection from the server side
        _log(logger, 5, "b")
        fake.wait_until(lambda: logger.stats().sent == 10)
        logger.close()
    assert (transport.calls, transport.failures) == (2, 0)
    assert len(fake.requests) == 2


def test_slow_sidecar_times_out_and_is_retried() -> None:
    """A sidecar slower than the timeout gets the batch again until it answers in time."""
    with FakeSidecar(_hold) as fake:
        logger = PredictionLogger(
            model="m",
            version="1",
            url=fake.url,
            batch_size=10,
            timeout=0.05,
            max_backoff=BACKOFF,
            flush_interval=NEVER,
        )
        logger.start()
        ids = _log(logger, 10)
        fake.wait_until(lambda: len(fake.requests) >= 3)  # each one timed out, then retried
        fake.behaviour = accept
        fake.release()
        logger.close(timeout=10)
    stats = logger.stats()
    _settled(stats)
    assert (stats.sent, stats.dropped) == (10, 0)
    assert set(fake.accepted) == set(ids)


@pytest.mark.parametrize("statuses", [[503, 500, 502, 504], [429, 429, 408]])
def test_unavailable_answers_are_retried(statuses: list[int]) -> None:
    """5xx, 429 and 408 answers are retried until accepted; every event arrives once."""
    pending = list(statuses)
    lock = threading.Lock()

    def flaky(payload: dict[str, Any]) -> Reply:
        with lock:
            status = pending.pop(0) if pending else None
        return accept(payload) if status is None else Reply(status, {"error": "busy"})

    with FakeSidecar(flaky) as fake:
        logger = PredictionLogger(
            model="m",
            version="1",
            url=fake.url,
            batch_size=10,
            max_backoff=BACKOFF,
            flush_interval=NEVER,
        )
        logger.start()
        ids = _log(logger, 30)
        logger.close(timeout=10)
    assert fake.accepted == ids
    assert len(fake.requests) == 3 + len(statuses)
    stats = logger.stats()
    _settled(stats)
    assert stats.sent == 30


def test_per_item_rejections_are_counted_not_retried_and_logged_once() -> None:
    """Events the sidecar rejects are counted rejected, never re-sent, and reported once."""
    bad = {f"e{i}" for i in range(0, 50, 7)}
    log = RecordingLog()
    with FakeSidecar(reject_where(lambda e: e["id"] in bad)) as fake:
        logger = PredictionLogger(
            model="m",
            version="1",
            url=fake.url,
            batch_size=10,
            logger=log,
            max_backoff=BACKOFF,
            flush_interval=NEVER,
        )
        logger.start()
        ids = _log(logger, 50)
        logger.close()
    assert fake.received_ids() == ids
    stats = logger.stats()
    _settled(stats)
    assert (stats.rejected, stats.sent) == (len(bad), 50 - len(bad))
    assert log.count("the sidecar rejected") == 1
    assert log.count("first: events[0].latency_seconds: must be finite") == 1


@pytest.mark.parametrize("status", [400, 401, 404, 415])
def test_whole_body_refusals_are_rejected_not_retried(status: int) -> None:
    """A 4xx for the whole body counts its events rejected, sends them once, logs once."""
    log = RecordingLog()
    with FakeSidecar(refuse(status)) as fake:
        logger = PredictionLogger(
            model="m",
            version="1",
            url=fake.url,
            batch_size=10,
            logger=log,
            max_backoff=BACKOFF,
            flush_interval=NEVER,
        )
        logger.start()
        ids = _log(logger, 30)
        logger.close()
    assert fake.received_ids() == ids
    stats = logger.stats()
    _settled(stats)
    assert (stats.rejected, stats.sent) == (30, 0)
    assert log.count(f"refused a batch of 10 events with {status} invalid_body") == 1


def test_close_with_the_sidecar_down_counts_the_rest_dropped() -> None:
    """close() gives up at its deadline; what was not delivered is counted dropped."""
    fake = FakeSidecar()
    log = RecordingLog()
    logger = PredictionLogger(
        model="m",
        version="1",
        url=fake.url,
        batch_size=10,
        logger=log,
        max_backoff=BACKOFF,
        flush_interval=NEVER,
    )
    logger.start()
    _log(logger, 30)
    logger.close(timeout=0.1)
    stats = logger.stats()
    _settled(stats)
    assert stats.dropped == 30
    assert log.count("closed with 30 events undelivered") == 1


def test_close_abandons_a_send_stuck_past_the_deadline() -> None:
    """Events in a send still held at the deadline are counted dropped once, never twice."""
    with FakeSidecar(_hold) as fake:
        transport = CountingTransport(fake.url)
        logger = PredictionLogger(
            model="m",
            version="1",
            transport=transport,
            batch_size=10,
            timeout=30,
            max_backoff=BACKOFF,
            flush_interval=NEVER,
        )
        logger.start()
        _log(logger, 25)
        fake.wait_until(lambda: fake.held == 1)
        logger.close(timeout=0.05)
        stats = logger.stats()
        _settled(stats)
        assert (stats.dropped, stats.sent) == (25, 0)
    wait_for(lambda: transport.closed)  # the stopped fake cut the send; the flusher has ended
    assert logger.stats() == stats


def test_random_faults_keep_the_accounting_exact() -> None:
    """Under a random mix of answers and a small buffer, every event is counted exactly once."""
    with FakeSidecar(chaos(2024)) as fake:
        logger = PredictionLogger(
            model="m", version="1", url=fake.url, max_buffer=200, batch_size=25, max_backoff=0.01,
            flush_interval=0.005, rng=random.Random(1),
        )  # fmt: skip
        logger.start()
        _log(logger, 3000)
        logger.close(timeout=10)
    stats = logger.stats()
    _settled(stats)
    assert stats.logged == 3000
    assert stats.sent == len(fake.accepted) == len(set(fake.accepted))


class _GarbageThenAccept:
    """A transport whose first answer is not a ``TransportResponse`` at all, then accepts."""

    def __init__(self) -> None:
        self.calls = 0
        self.events: list[str] = []

    def send(self, body: bytes, timeout: float) -> Any:
        self.calls += 1
        if self.calls == 1:
            return None  # delivery cannot read a status from this
        ids = [event["id"] for event in json.loads(body)["events"]]
        self.events.extend(ids)
        return TransportResponse(202, b'{"rejected": []}')


def test_an_error_inside_delivery_retries_the_batch_instead_of_stranding_it() -> None:
    """A batch whose delivery raises goes back to the buffer, is sent later, and is logged."""
    transport = _GarbageThenAccept()
    log = RecordingLog()
    logger = PredictionLogger(
        model="m", version="1", transport=transport, batch_size=5, flush_interval=NEVER,
        max_backoff=BACKOFF, logger=log,
    )  # fmt: skip
    logger.start()
    ids = _log(logger, 5)
    wait_for(lambda: logger.stats().sent == 5)
    logger.close()
    _settled(logger.stats())
    assert transport.events == ids
    assert log.count("delivery error: AttributeError") == 1
