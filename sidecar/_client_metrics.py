"""Prometheus metrics of the prediction logger, read from its stats at scrape time.

Imported only when a registry is passed to the logger, so ``sidecar.client`` itself needs no
``prometheus_client``. Nothing here touches the hot path: ``log()`` only bumps plain integers
under the logger's lock, and this collector copies them when Prometheus scrapes. Every series
carries the logger's ``model`` and ``version``, like every other modelwatch series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from sidecar.client import LoggerStats

EVENTS = "modelwatch_logger_events"
"""Exposed as ``modelwatch_logger_events_total{outcome}``."""
BUFFER = "modelwatch_logger_buffer_events"
CAPACITY = "modelwatch_logger_buffer_capacity_events"
SAMPLED_OUT = "modelwatch_logger_sampled_out"
"""Exposed as ``modelwatch_logger_sampled_out_total``."""
OUTCOMES = ("sent", "dropped", "rejected")
MODEL_LABELS = ("model", "version")


class LoggerCollector(Collector):
    """Yields the logger's counters and buffer gauges from ``stats()`` on every scrape."""

    def __init__(
        self, stats: Callable[[], LoggerStats], capacity: int, *, model: str, version: str
    ) -> None:
        self._stats = stats
        self._capacity = capacity
        self._model = [model, version]

    def describe(self) -> Iterator[Metric]:
        """The metric names, so a registry refuses a second logger's duplicates up front."""
        yield CounterMetricFamily(EVENTS, "", labels=[*MODEL_LABELS, "outcome"])
        yield GaugeMetricFamily(BUFFER, "", labels=MODEL_LABELS)
        yield GaugeMetricFamily(CAPACITY, "", labels=MODEL_LABELS)
        yield CounterMetricFamily(SAMPLED_OUT, "", labels=MODEL_LABELS)

    def collect(self) -> Iterator[Metric]:
        """The logger's metrics now; every outcome series exists from the start, at zero."""
        stats = self._stats()
        model = self._model
        events = CounterMetricFamily(
            EVENTS,
            "Prediction events by final outcome: sent (accepted by the sidecar), dropped "
            "(buffer full, internal error or shutdown deadline), rejected (refused as invalid).",
            labels=[*MODEL_LABELS, "outcome"],
        )
        for outcome in OUTCOMES:
            events.add_metric([*model, outcome], getattr(stats, outcome))
        yield events
        buffer = GaugeMetricFamily(
            BUFFER,
            "Prediction events held by the logger, waiting or in flight to the sidecar.",
            labels=MODEL_LABELS,
        )
        buffer.add_metric(model, stats.buffered + stats.in_flight)
        yield buffer
        capacity = GaugeMetricFamily(
            CAPACITY,
            "Prediction events the logger's buffer holds before it drops the oldest.",
            labels=MODEL_LABELS,
        )
        capacity.add_metric(model, self._capacity)
        yield capacity
        sampled_out = CounterMetricFamily(
            SAMPLED_OUT,
            "Predictions not logged because of the sampling rate.",
            labels=MODEL_LABELS,
        )
        sampled_out.add_metric(model, stats.sampled_out)
        yield sampled_out


def register(
    registry: CollectorRegistry,
    stats: Callable[[], LoggerStats],
    capacity: int,
    *,
    model: str,
    version: str,
) -> LoggerCollector:
    """Register a collector of ``stats`` on ``registry``; ValueError if its names are taken."""
    collector = LoggerCollector(stats, capacity, model=model, version=version)
    registry.register(collector)
    return collector
