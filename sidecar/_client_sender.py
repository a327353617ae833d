"""The prediction logger's background sender: batches from the buffer to the sidecar.

The request path (``sidecar.client``) only appends encoded events to a ``deque`` and, when a
batch has filled, sets an ``Event``; it takes no lock on its common path. Everything else
happens here, on one daemon thread: taking batches by count and by time, sending them, putting
failed ones back at the front (the oldest are then the first dropped when the buffer overflows),
jittered backoff, draining within the close deadline, and logging what went wrong.

``Ledger`` holds every count the request path does not keep itself. Its fields change only with
``Ledger.lock`` held, by this thread or by the request path's uncommon branches (full buffer,
sampling, values JSON cannot carry, calls after ``close()``), so a snapshot taken under the lock
adds up: every event accepted is buffered, in flight, or settled exactly once.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sidecar._client_delivery import Delivery, Problem, deliver
from sidecar._client_throttle import Throttle
from sidecar._client_transport import TransportResponse

BACKOFF_BASE_SECONDS = 0.1
"""First retry waits up to this long; each further failure doubles the cap, up to max_backoff."""
_JOIN_GRACE_SECONDS = 0.05


class Transport(Protocol):
    """Sends one ``POST /v1/events`` body; raises (anything) when there is no HTTP answer."""

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        """POST ``body`` and return the answer; ``timeout`` bounds the wait in seconds."""
        ...


@dataclass(slots=True)
class Ledger:
    """The counts of settled and in-flight events; change them only with ``lock`` held."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sampled_out: int = 0
    sent: int = 0
    dropped: int = 0
    rejected: int = 0
    in_flight: int = 0
    overflowed: int = 0
    """Dropped because the buffer was full (a subset of ``dropped``); logged by the sender."""
    abandoned: bool = False
    """``close()`` has counted what was left as dropped; nothing may settle it again."""
    problems: dict[str, Problem] = field(default_factory=dict)
    """Seen on the request path, logged by the sender (one per kind until reported)."""


@dataclass(frozen=True, slots=True)
class Batching:
    """When and how the sender sends: sizes, intervals and the per-send timeout."""

    batch_size: int
    max_buffer: int
    flush_interval: float
    timeout: float
    max_backoff: float


class Sender:
    """Takes batches from ``buffer`` and delivers them, on one daemon thread."""

    def __init__(
        self,
        *,
        buffer: deque[bytes],
        ready: threading.Event,
        ledger: Ledger,
        transport: Transport,
        envelope: tuple[bytes, bytes],
        batching: Batching,
        notes: Throttle,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._buffer = buffer
        self._ready = ready
        self._ledger = ledger
        self._transport = transport
        self._head, self._tail = envelope
        self._batching = batching
        self._notes = notes
        self._clock = clock
        self._rng = rng
        self._stop = threading.Event()
        self._deadline = math.inf
        self._thread: threading.Thread | None = None
        self._overflow_reported = 0

    def start(self) -> None:
        """Start the thread; calling it again, or after ``finish``, does nothing."""
        if self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(
            target=self._run, name="modelwatch-prediction-logger", daemon=True
        )
        self._thread.start()

    def finish(self, deadline: float) -> None:
        """Send what is buffered until ``deadline`` (on the clock), then stop the thread."""
        self._deadline = deadline
        self._stop.set()
        self._ready.set()
        thread = self._thread
        if thread is None:
            self._drain(0)
            self._close_transport()
            return
        remaining = deadline - self._clock()
        thread.join(None if math.isinf(remaining) else max(remaining, 0) + _JOIN_GRACE_SECONDS)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        failures = 0
        last_take = self._clock()
        while True:
            try:
                batch = self._next_batch(last_take)
                if batch is None:
                    break
                last_take = self._clock()
                failures = self._attempt(batch, self._batching.timeout, failures)
                self.report()
                if failures:
                    self._stop.wait(self._backoff(failures))
            except Exception as exc:  # a bug here must not end delivery for the process
                self._notes.warn("internal", f"flusher error: {type(exc).__name__}: {exc}")
                self._stop.wait(self._batching.max_backoff)
        self._drain(failures)
        self._close_transport()

    def _next_batch(self, last_take: float) -> list[bytes] | None:
        """The next batch once ``batch_size`` events wait or ``flush_interval`` has passed."""
        ready, buffer, batching = self._ready, self._buffer, self._batching
        while True:
            # Cleared before the stop flag and the buffer are looked at: finish() and a filled
            # batch set it after what they announce, so the wait below returns at once and no
            # wake-up is lost.
            ready.clear()
            if self._stop.is_set():
                return None
            waiting = len(buffer)
            due = last_take + batching.flush_interval - self._clock()
            if waiting >= batching.batch_size or (waiting and due <= 0):
                batch = self._take()
                if batch:  # a full buffer's drops on the request path may have emptied it
                    return batch
                continue
            ready.wait(due if due > 0 else batching.flush_interval)

    def _take(self) -> list[bytes]:
        with self._ledger.lock:
            return self._take_locked()

    def _take_locked(self) -> list[bytes]:
        if self._ledger.abandoned:  # close() has counted what was left; nothing more to send
            return []
        buffer = self._buffer
        count = min(self._batching.batch_size, len(buffer))
        batch = [buffer.popleft() for _ in range(count)]
        self._ledger.in_flight += count
        return batch

    def _attempt(self, batch: list[bytes], timeout: float, failures: int) -> int:
        """Send ``batch`` and count what became of it; the new count of consecutive failures."""
        try:
            result = deliver(self._transport.send, self._head, self._tail, batch, timeout)
        except Exception as exc:  # a bug in delivery must not strand the batch in flight
            result = Delivery(retry=list(batch))
            result.problems.append(
                Problem("internal", f"delivery error: {type(exc).__name__}: {exc}")
            )
        ledger, buffer = self._ledger, self._buffer
        with ledger.lock:
            if ledger.abandoned:  # close() gave up waiting and counted these as dropped
                return failures
            ledger.in_flight -= len(batch)
            ledger.sent += result.sent
            ledger.rejected += result.rejected
            if result.retry:
                # Back at the front, in order, so the oldest events are the first dropped.
                buffer.extendleft(reversed(result.retry))
                excess = len(buffer) - self._batching.max_buffer
                for _ in range(excess):
                    buffer.popleft()
                if excess > 0:
                    ledger.dropped += excess
                    ledger.overflowed += excess
        for problem in result.problems:
            self._notes.warn(problem.kind, problem.message)
        if result.retry:
            return failures + 1
        if failures:
            self._notes.info(f"the sidecar answers again after {failures} failed attempts")
        return 0

    def _drain(self, failures: int) -> None:
        """Send what is buffered until the close deadline; never wait past it."""
        ledger = self._ledger
        while True:
            with ledger.lock:
                remaining = self._deadline - self._clock()
                if ledger.abandoned or not self._buffer or remaining <= 0:
                    return
                batch = self._take_locked()
            failures = self._attempt(batch, min(self._batching.timeout, remaining), failures)
            if failures:
                pause = min(self._backoff(failures), self._deadline - self._clock())
                if pause > 0:
                    time.sleep(pause)

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, base * 2**(failures - 1)))."""
        cap = min(self._batching.max_backoff, BACKOFF_BASE_SECONDS * 2.0 ** min(failures - 1, 40))
        return cap * self._rng.random()

    def report(self) -> None:
        """Log what the request path and the buffer saw since the last report."""
        ledger = self._ledger
        with ledger.lock:
            overflowed = ledger.overflowed - self._overflow_reported
            self._overflow_reported = ledger.overflowed
            problems, ledger.problems = ledger.problems, {}
        if overflowed:
            self._notes.warn(
                "overflow",
                f"buffer full ({self._batching.max_buffer} events): dropped the {overflowed} "
                "oldest events; the sidecar is slow or unreachable",
            )
        for problem in problems.values():
            self._notes.warn(problem.kind, problem.message)

    def _close_transport(self) -> None:
        close = getattr(self._transport, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                self._notes.warn("internal", f"closing the transport: {exc!r}")
