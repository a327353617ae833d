"""The shipper: a background thread that moves spooled prediction events into a sink.

It reads spool records after the committed position (bounded by bytes per read), decodes them
(``sidecar.spool_records``), builds ECS documents and sends them in bulk requests bounded by
documents and by bytes. A record whose events are all plain is decoded and built in one pass
(``sidecar._ship_documents``); any other takes the reference path, with the same result. Each
document ends delivered (or a duplicate of one already stored, which is the same),
dead-lettered with its reason, or retried: only the retried ones are sent again, after a
full-jitter exponential backoff that ``stop()`` interrupts. The spool position
is committed only once every document up to it is done, so a crash or an outage replays what
was not yet acknowledged and the sink's ``create``-by-id turns the replay into duplicates, not
copies. Drift snapshots, handed over from the event loop, wait in a small bounded queue and go
through the same sink.

It never runs on the event loop and never blocks it: the ingest path only appends to the spool
and calls ``notify()``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from sidecar._dead_letter import DeadLetterFile
from sidecar._ship_documents import record_documents
from sidecar._shipping_metrics import ShippingStats
from sidecar._sink_types import Outcome, Sink
from sidecar.documents import Document, DocumentBuilder
from sidecar.snapshot import DriftSnapshot
from sidecar.spool import SpoolPosition, SpoolRecord
from sidecar.spool_records import SpoolRecordError, decode_batch

__all__ = ["Shipper", "ShipperConfig", "SpoolReader", "backoff_delay"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    """How much goes in one bulk request, how long to back off, how much drift to queue."""

    batch_docs: int = 2_000
    batch_bytes: int = 5 * MiB
    base_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    drift_queue: int = 16
    """Snapshot rounds (one per period, every model) held while the sink is away."""
    idle_seconds: float = 1.0
    """Longest idle wait; ``notify()`` normally ends it at once."""
    drain_seconds: float = 5.0
    """After ``stop()``, how long to keep shipping what is spooled while the sink answers."""

    def __post_init__(self) -> None:
        for name in ("batch_docs", "batch_bytes", "drift_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("base_backoff_seconds", "max_backoff_seconds", "idle_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be greater than 0, got {getattr(self, name)}")


class SpoolReader(Protocol):
    """The part of ``sidecar.spool.Spool`` the shipper uses."""

    def read(
        self, after: SpoolPosition | None, *, max_records: int, max_bytes: int
    ) -> list[SpoolRecord]:
        """Records after ``after``, in order."""
        ...

    def committed(self) -> SpoolPosition | None:
        """The durable progress marker."""
        ...

    def commit(self, position: SpoolPosition) -> None:
        """Record progress durably."""
        ...


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Full jitter: uniform in ``[0, min(cap, base * 2**attempt))``; attempt 0 is the first."""
    ceiling = cap if attempt >= 64 else min(cap, base * 2.0**attempt)
    return ceiling * rand()


@dataclass(slots=True)
class _Pending:
    """Documents still to deliver, and for each record the index just past its documents."""

    documents: list[Document]
    sizes: list[int]
    record_ends: list[tuple[int, SpoolPosition]]


class Shipper:
    """Ships the spool to ``sink`` on its own thread; ``start()``, then ``stop()``."""

    def __init__(
        self,
        spool: SpoolReader,
        sink: Sink,
        builder: DocumentBuilder,
        *,
        dead_letter: DeadLetterFile,
        logger: FilteringBoundLogger,
        stats: ShippingStats | None = None,
        config: ShipperConfig | None = None,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.stats = ShippingStats() if stats is None else stats
        self.config = ShipperConfig() if config is None else config
        self._spool = spool
        self._sink = sink
        self._builder = builder
        self._dead_letter = dead_letter
        self._logger = logger
        self._wall_clock = wall_clock
        self._timer = timer
        self._rand = rand
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._drift: deque[tuple[tuple[DriftSnapshot, ...], float]] = deque()
        self._drift_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._position = spool.committed()
        self._retrying = False

    # ------------------------------------------------------------------ other threads' side

    def start(self) -> None:
        """Start the shipping thread (once)."""
        if self._thread is not None:
            raise RuntimeError("the shipper was already started")
        self._thread = threading.Thread(target=self._run, name="modelwatch-shipper", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Say that the spool has new records (cheap; called per accepted request)."""
        if not self._wake.is_set():
            self._wake.set()

    def offer_drift(self, snapshots: Sequence[DriftSnapshot], wall_time: float) -> None:
        """Queue one round of drift snapshots; the oldest round is dropped (counted) when full."""
        with self._drift_lock:
            if len(self._drift) >= self.config.drift_queue:
                oldest, _ = self._drift.popleft()
                self.stats.count("dropped", _drift_documents([(oldest, wall_time)]))
            self._drift.append((tuple(snapshots), wall_time))
        self.notify()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop within ``timeout`` seconds; True when the thread has ended.

        What is spooled keeps shipping for up to ``drain_seconds`` (within ``timeout``) while
        the sink answers; a backoff wait ends at once. Anything left waits in the spool.
        """
        self._drain_until = self._timer() + min(self.config.drain_seconds, timeout * 0.8)
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if not stopped:
            self._logger.warning("shipper still busy at the stop deadline", timeout=timeout)
        return stopped

    # ------------------------------------------------------------------ the shipping thread

    def _run(self) -> None:
        failures = 0
        while not (self._stop.is_set() and self._timer() >= self._drain_until):
            self._wake.clear()
            try:
                progressed = self.ship_once()
                failures = 0
            except Exception:
                # Why: the thread must outlive any one bad batch; the batch is retried later.
                self._logger.exception("shipping failed; retrying")
                progressed = False
                if self._stop.wait(self._backoff(failures)):
                    break
                failures += 1
                continue
            if not progressed:
                if self._stop.is_set():
                    break
                self._wake.wait(self.config.idle_seconds)

    def ship_once(self) -> bool:
        """Ship queued drift and one read of the spool; False when there was nothing to do.

        Also False when ``stop()`` interrupted a retry: the rest stays in the spool.
        """
        drift_done = self._ship_drift()
        records = self._spool.read(
            self._position,
            max_records=self.config.batch_docs,
            max_bytes=self.config.batch_bytes,
        )
        if not records:
            return drift_done
        pending = self._decode(records)
        return self._deliver_records(pending)

    def _ship_drift(self) -> bool:
        with self._drift_lock:
            rounds = list(self._drift)
            self._drift.clear()
        if not rounds:
            return False
        try:
            documents = [
                doc
                for snaps, wall in rounds
                for snap in snaps
                for doc in self._builder.drift(snap, wall)
            ]
        except Exception as exc:
            # Why: building is deterministic, so a retry would fail the same way and hold up
            # the spool behind it; the snapshots are counted as lost instead.
            lost = _drift_documents(rounds)
            self.stats.count("dropped", lost)
            self._logger.error(
                "cannot build drift documents; snapshots dropped", documents=lost, error=repr(exc)
            )
            return True
        try:
            done = self._deliver(documents)
        except Exception:
            # Why: a sink that raises may answer next time; the rounds go back to the front of
            # the queue (documents have stable ids, so a replay stores duplicates, not copies).
            self._requeue_drift(rounds)
            raise
        if done < len(documents):
            # Interrupted by stop(): these snapshots live in memory only; say they are lost.
            self.stats.count("dropped", len(documents) - done)
        return True

    def _requeue_drift(self, rounds: list[tuple[tuple[DriftSnapshot, ...], float]]) -> None:
        with self._drift_lock:
            self._drift.extendleft(reversed(rounds))
            while len(self._drift) > self.config.drift_queue:
                oldest, _ = self._drift.popleft()
                self.stats.count("dropped", _drift_documents([(oldest, 0.0)]))

    def _decode(self, records: list[SpoolRecord]) -> _Pending:
        pending = _Pending([], [], [])
        for record in records:
            try:
                documents = self._documents(record.payload)
            except Exception as exc:
                # Why: a record whose documents cannot be built (an undecodable record, or a
                # value no document can hold, such as a latency too large for nanoseconds)
                # would otherwise be retried forever and hold back every record behind it.
                reason = (
                    str(exc)
                    if isinstance(exc, SpoolRecordError)
                    else f"its documents could not be built: {type(exc).__name__}: {exc}"
                )
                self._logger.error(
                    "spool record dead-lettered: it cannot be shipped",
                    segment=record.position.segment,
                    offset=record.position.offset,
                    error=reason,
                )
                self._dead_letter.record(record.payload, reason)
                self.stats.dead_lettered()
                pending.record_ends.append((len(pending.documents), record.position))
                continue
            # The record's bytes share out over its documents: a cheap, proportional size.
            share = len(record.payload) // max(1, len(documents)) + 1
            pending.documents.extend(documents)
            pending.sizes.extend([share] * len(documents))
            pending.record_ends.append((len(pending.documents), record.position))
        return pending

    def _documents(self, payload: bytes) -> list[Document]:
        """A record's documents: the one-pass build when it answers, else the reference path."""
        documents = record_documents(payload, self._builder)
        if documents is not None:
            return documents
        batch = decode_batch(payload)
        return self._builder.predictions(
            batch.model, batch.version, batch.events, received_at=batch.received_at
        )

    def _deliver_records(self, pending: _Pending) -> bool:
        """Deliver in bulk-sized chunks, committing after each chunk what it completed."""
        done = 0
        ends = deque(pending.record_ends)
        while True:
            committable: SpoolPosition | None = None
            while ends and ends[0][0] <= done:
                committable = ends.popleft()[1]
            if committable is not None:
                self._spool.commit(committable)
                self._position = committable
            if done >= len(pending.documents) and not ends:
                return True
            stop = self._chunk_end(pending.sizes, done)
            chunk = pending.documents[done:stop]
            if self._deliver(chunk) < len(chunk):
                return False
            done = stop

    def _chunk_end(self, sizes: list[int], start: int) -> int:
        total = 0
        end = start
        while end < len(sizes) and end - start < self.config.batch_docs:
            if end > start and total + sizes[end] > self.config.batch_bytes:
                break
            total += sizes[end]
            end += 1
        return end

    def _deliver(self, documents: list[Document]) -> int:
        """Send until every document is done; how many are done (fewer only after stop())."""
        waiting = list(range(len(documents)))
        attempt = 0
        while waiting:
            batch = [documents[i] for i in waiting]
            started = self._timer()
            results = self._sink.send(batch)
            elapsed = self._timer() - started
            if len(results) != len(batch):
                raise RuntimeError(
                    f"sink answered {len(results)} results for {len(batch)} documents"
                )
            retry: list[int] = []
            refused: list[tuple[Document, str]] = []
            shipped = 0
            for index, result in zip(waiting, results, strict=True):
                if result.outcome is Outcome.RETRY:
                    retry.append(index)
                elif result.outcome is Outcome.DEAD:
                    refused.append((documents[index], result.reason or "refused"))
                else:
                    shipped += 1
            self.stats.bulk(elapsed, answered=len(retry) < len(batch), wall_time=self._wall_clock())
            self.stats.count("shipped", shipped)
            if refused:
                self._refuse(refused)
            if retry:
                self.stats.count("retried", len(retry))
                self._log_retry(retry, results, waiting, attempt)
            elif self._retrying:
                self._retrying = False
                self._logger.info("sink accepting again")
            waiting = retry
            if waiting:
                if self._stop.is_set() or self._stop.wait(self._backoff(attempt)):
                    return len(documents) - len(waiting)
                attempt += 1
        return len(documents)

    def _refuse(self, refused: list[tuple[Document, str]]) -> None:
        self.stats.count("failed", len(refused))
        try:
            written = self._dead_letter.documents(refused)
        except OSError as exc:
            self._logger.error(
                "cannot write the dead-letter file; refused documents are lost",
                documents=len(refused),
                error=str(exc),
            )
            return
        self.stats.dead_lettered(written)
        self._logger.warning(
            "documents refused by the sink, dead-lettered",
            documents=len(refused),
            first_reason=refused[0][1],
            directory=str(self._dead_letter.directory),
        )

    def _log_retry(
        self, retry: list[int], results: Sequence[object], waiting: list[int], attempt: int
    ) -> None:
        if self._retrying:
            return
        self._retrying = True
        first = results[waiting.index(retry[0])]
        self._logger.warning(
            "sink unavailable; retrying with backoff",
            documents=len(retry),
            reason=getattr(first, "reason", None),
            attempt=attempt,
        )

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt,
            self.config.base_backoff_seconds,
            self.config.max_backoff_seconds,
            self._rand,
        )


def _drift_documents(rounds: Sequence[tuple[Sequence[DriftSnapshot], float]]) -> int:
    """How many documents ``rounds`` become: one per feature plus one per snapshot."""
    return sum(len(snap.features) + 1 for snaps, _ in rounds for snap in snaps)
