"""The shipper's counters and the collector that exports them with the spool's state.

``ShippingStats`` is written by the shipper thread and by the ingest hook (drops) and read at
scrape time on the event loop, so every access takes one small lock. ``ShippingCollector``
reads it and the spool's ``stats()`` only when Prometheus scrapes; the outcome counters exist
at 0 from start-up.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sidecar._families import Families
from sidecar.metric_names import (
    ES_BULK_DURATION,
    ES_DEAD_LETTER,
    ES_DOCUMENTS,
    ES_LAST_SUCCESS,
    ES_OUTCOMES,
    SPOOL_BYTES,
    SPOOL_CORRUPT_SEGMENTS,
    SPOOL_OLDEST_AGE,
)

BULK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds of ``modelwatch_es_bulk_duration_seconds``; a bulk of 2 000 documents to a
healthy cluster takes tens of milliseconds, a timed-out one the client's timeout."""


class SpoolState(Protocol):
    """What the collector reads from the spool (``sidecar.spool.SpoolStats``)."""

    @property
    def bytes(self) -> int:
        """Bytes on disk."""
        ...

    @property
    def corrupt_segments(self) -> int:
        """Segments quarantined since start."""
        ...

    @property
    def oldest_written_at(self) -> float | None:
        """Wall-clock time of the oldest unshipped record, or None."""
        ...


class ShippingStats:
    """Document outcomes, dead letters, the last success and the bulk duration histogram."""

    def __init__(self, buckets: tuple[float, ...] = BULK_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._outcomes = dict.fromkeys(ES_OUTCOMES, 0)
        self._dead_letters = 0
        self._last_success = 0.0
        self._buckets = buckets
        self._bucket_counts = [0] * (len(buckets) + 1)
        self._bulk_sum = 0.0

    def count(self, outcome: str, n: int = 1) -> None:
        """Add ``n`` documents to ``outcome`` (one of ``ES_OUTCOMES``)."""
        if outcome not in self._outcomes:
            raise ValueError(f"outcome must be one of {ES_OUTCOMES}, got {outcome!r}")
        with self._lock:
            self._outcomes[outcome] += n

    def dead_lettered(self, n: int = 1) -> None:
        """Count ``n`` entries written to the dead-letter file."""
        with self._lock:
            self._dead_letters += n

    def bulk(self, seconds: float, *, answered: bool, wall_time: float) -> None:
        """Record one bulk send; ``answered`` means the sink took at least one document."""
        index = bisect.bisect_left(self._buckets, seconds)
        with self._lock:
            self._bucket_counts[index] += 1
            self._bulk_sum += seconds
            if answered:
                self._last_success = wall_time

    def outcomes(self) -> dict[str, int]:
        """A copy of the outcome counters."""
        with self._lock:
            return dict(self._outcomes)

    def snapshot(self) -> tuple[dict[str, int], int, float, list[int], float]:
        """Outcomes, dead letters, last success, bucket counts (not cumulative) and sum."""
        with self._lock:
            return (
                dict(self._outcomes),
                self._dead_letters,
                self._last_success,
                list(self._bucket_counts),
                self._bulk_sum,
            )

    @property
    def buckets(self) -> tuple[float, ...]:
        """The histogram's upper bounds, without +Inf."""
        return self._buckets


class ShippingCollector(Collector):
    """Exports ``ShippingStats`` and the spool's size, age and corruption count at scrape time."""

    def __init__(
        self,
        stats: ShippingStats,
        spool_stats: Callable[[], SpoolState] | None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._stats = stats
        self._spool_stats = spool_stats
        self._wall_clock = wall_clock

    def collect(self) -> Iterator[Metric]:
        """The shipping families, in the contract's order."""
        out = Families()
        outcomes, dead, last_success, counts, total = self._stats.snapshot()
        for outcome in ES_OUTCOMES:
            out.add(ES_DOCUMENTS, (outcome,), float(outcomes[outcome]))
        out.add(ES_DEAD_LETTER, (), float(dead))
        out.add(ES_LAST_SUCCESS, (), last_success)
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self._stats.buckets, math.inf), counts, strict=True):
            running += n
            cumulative.append(("+Inf" if math.isinf(bound) else repr(bound), float(running)))
        out.add_histogram(ES_BULK_DURATION, (), cumulative, total)
        if self._spool_stats is not None:
            spool = self._spool_stats()
            out.add(SPOOL_BYTES, (), float(spool.bytes))
            oldest = spool.oldest_written_at
            age = 0.0 if oldest is None else max(0.0, self._wall_clock() - oldest)
            out.add(SPOOL_OLDEST_AGE, (), age)
            out.add(SPOOL_CORRUPT_SEGMENTS, (), float(spool.corrupt_segments))
        yield from out.families()
