"""The prediction logger called from many threads at once, with ``close()`` racing them.

The request path takes no lock on its common branch (it appends to a deque the sender thread
shares), so these tests pin what that must not cost: under concurrent ``log()`` and
``log_many()`` calls, a sidecar answering at random, a small buffer that overflows on both the
request path and the sender's retries, and a ``close()`` that lands while calls are still
coming, every event is counted exactly once and nothing stays buffered.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable

import pytest

from sidecar._client_transport import TransportResponse
from sidecar.client import LoggerStats, PredictionLogger
from tests.support.fake_sidecar import FakeSidecar, chaos, wait_for

PRODUCERS = 4
EVENTS_BEFORE_CLOSE = 4000


class _MeetingDeque(deque[bytes]):
    """A buffer whose appends wait for each other: both callers read its length, then append."""

    meeting = threading.Barrier(2, timeout=10)

    def append(self, item: bytes) -> None:
        self.meeting.wait()
        super().append(item)


class _Recording:
    """An in-memory transport that accepts every batch and signals its arrival."""

    def __init__(self) -> None:
        self.arrived = threading.Event()

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        self.arrived.set()
        return TransportResponse(202, b'{"rejected": []}')


def test_a_batch_filled_by_two_threads_at_once_wakes_the_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two calls that each saw the buffer short of a batch, then filled it together, wake it."""
    monkeypatch.setattr("sidecar.client.deque", _MeetingDeque)
    transport = _Recording()
    logger = PredictionLogger(
        model="m", version="1", transport=transport, batch_size=2, flush_interval=3600
    )
    logger.start()
    try:
        # The sender waits on its event; only a call setting it can wake it within the hour.
        wait_for(lambda: len(logger._ready._cond._waiters) == 1)  # type: ignore[attr-defined]
        callers = [
            threading.Thread(
                target=logger.log, kwargs={"features": {}, "prediction": i, "latency_seconds": 0}
            )
            for i in range(2)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert transport.arrived.wait(10)
    finally:
        logger.close()
    assert logger.stats().sent == 2


class _Producers:
    """Threads logging one to three rows per call until stopped; each counts what it logged."""

    def __init__(self, logger: PredictionLogger) -> None:
        self.logger = logger
        self.stop = threading.Event()
        self.calls = [0] * PRODUCERS
        self.events = [0] * PRODUCERS
        self.threads = [threading.Thread(target=self._produce, args=(w,)) for w in range(PRODUCERS)]

    def _produce(self, worker: int) -> None:
        rng = random.Random(worker)
        call = 0
        while not self.stop.is_set():
            if call % 4 == 0:
                self.logger.log(
                    features={"x": rng.random()},
                    prediction=1,
                    latency_seconds=0.001,
                    event_id=f"w{worker}-{call}",
                )
                self.events[worker] += 1
            else:
                rows = call % 4  # 1 is the model server's one-row call
                ids = self.logger.log_many(
                    features=[{"x": rng.random()} for _ in range(rows)],
                    predictions=[0] * rows,
                    latency_seconds=0.001,
                    event_ids=[f"w{worker}-{call}-{r}" for r in range(rows)],
                )
                assert len(ids) == rows
                self.events[worker] += rows
            call += 1
            self.calls[worker] = call

    def run_until(self, condition: Callable[[], bool]) -> None:
        """Start the threads, wait for ``condition``, then stop them and wait for them."""
        for thread in self.threads:
            thread.start()
        try:
            wait_for(condition)
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join()


def _run(sample_rate: float, close_midway: bool) -> tuple[LoggerStats, int, FakeSidecar]:
    """Producers against a chaotic sidecar; close() either while they run or after they stop."""
    with FakeSidecar(chaos(7)) as fake:
        logger = PredictionLogger(
            model="m", version="1", url=fake.url, max_buffer=300, batch_size=40,
            flush_interval=0.005, max_backoff=0.01, sample_rate=sample_rate, rng=random.Random(3),
        )  # fmt: skip
        logger.start()
        producers = _Producers(logger)
        closed_at: list[list[int]] = []

        def done() -> bool:
            if not closed_at:
                if logger.stats().logged < EVENTS_BEFORE_CLOSE:
                    return False
                if not close_midway:
                    return True
                # close() from this thread while the producers keep calling, then let each of
                # them make calls after it: those take the after-close branches.
                logger.close(timeout=5)
                closed_at.append(list(producers.calls))
            since = zip(producers.calls, closed_at[0], strict=True)
            return all(now >= then + 200 for now, then in since)

        producers.run_until(done)
        logger.close(timeout=5)
    return logger.stats(), sum(producers.events), fake


@pytest.mark.parametrize("close_midway", [False, True], ids=["close-after", "close-midway"])
def test_concurrent_callers_are_counted_exactly_once(close_midway: bool) -> None:
    """Every event of every thread is sent, dropped or rejected once; nothing stays buffered."""
    stats, total, fake = _run(1.0, close_midway)
    assert stats.logged == total
    assert stats.sent + stats.dropped + stats.rejected == total
    assert stats.buffered == stats.in_flight == stats.sampled_out == 0
    assert stats.sent == len(fake.accepted) == len(set(fake.accepted))
    assert stats.dropped > 0  # the small buffer overflowed: the uncommon branches ran too
    if close_midway:
        assert stats.sent < total


def test_concurrent_sampling_is_counted_exactly_once() -> None:
    """With sampling, sampled-out rows join the same exact ledger under concurrency."""
    stats, total, fake = _run(0.5, False)
    assert stats.logged == total
    assert stats.sent + stats.dropped + stats.rejected + stats.sampled_out == total
    assert 0 < stats.sampled_out < total
    assert stats.buffered == stats.in_flight == 0
    assert stats.sent == len(fake.accepted) == len(set(fake.accepted))
