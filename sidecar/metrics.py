"""The collector that exports the Prometheus metrics contract at scrape time.

``ModelwatchCollector`` reads the monitors, the ingest counters and the feedback store only when
Prometheus scrapes, so the ingest path never touches a metric object. The names, labels and help
texts it exports live in ``sidecar.metric_names`` (re-exported here) and in ``docs/metrics.md``;
the families are built per source in ``sidecar._families``.

A failing source yields fewer metrics and one more ``modelwatch_collector_errors_total``; a scrape
never fails. Drift statistics that are not yet defined (too few values in the window) are
exported as NaN, so their series exist from start-up and comparisons such as ``> 0.2`` are
false until there is enough data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from importlib import metadata

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sidecar import metric_names
from sidecar._families import (
    Families,
    MonitorView,
    QualitySource,
    QualityView,
    add_counters,
    add_drift,
    add_ingest,
    add_quality,
    empty_family,
)
from sidecar.counters import IngestCounters
from sidecar.metric_names import *  # noqa: F403 - the whole contract is re-exported (see __all__)
from sidecar.metric_names import (
    BUILD_INFO,
    COLLECTOR_DURATION,
    COLLECTOR_ERRORS,
    ERROR_SOURCES,
    METRICS,
)

__all__ = [
    "ModelwatchCollector",
    "MonitorView",
    "QualitySource",
    "QualityView",
    "build_registry",
    "package_version",
]
__all__ += metric_names.__all__


class ModelwatchCollector(Collector):
    """Builds every modelwatch metric family from the live sources at each scrape.

    ``extra`` collectors (the log shipper's, when it lands) are collected inside the same error
    guard, so their failure also shows up in ``modelwatch_collector_errors_total{source="extra"}``.
    """

    def __init__(
        self,
        monitors: Iterable[MonitorView],
        ingest: IngestCounters,
        feedback: QualitySource,
        *,
        extra: Sequence[Collector] = (),
        build_version: str | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._monitors = monitors
        self._ingest = ingest
        self._feedback = feedback
        self._extra = tuple(extra)
        self._version = build_version if build_version is not None else package_version()
        self._timer = timer
        self._errors = dict.fromkeys(ERROR_SOURCES, 0)

    def describe(self) -> Iterator[Metric]:
        """The families this collector owns (no samples), so registries can spot name clashes."""
        return (empty_family(spec) for spec in METRICS)

    def collect(self) -> Iterator[Metric]:
        """Every family with at least one sample, in ``METRICS`` order, then the extras."""
        started = self._timer()
        out = Families()
        for monitor in self._monitors:
            self._guarded(out, "counters", partial(add_counters, monitor=monitor))
            self._guarded(out, "drift", partial(add_drift, monitor=monitor))
        self._guarded(out, "feedback", lambda part: add_quality(part, self._feedback.quality()))
        self._guarded(out, "ingest", lambda part: add_ingest(part, self._ingest))
        out.add(BUILD_INFO, (self._version,), 1.0)
        extra: list[Metric] = []
        for collector in self._extra:
            try:
                extra.extend(collector.collect())
            except Exception:
                self._errors["extra"] += 1
        for source, count in self._errors.items():
            out.add(COLLECTOR_ERRORS, (source,), float(count))
        out.add(COLLECTOR_DURATION, (), self._timer() - started)
        yield from out.families()
        yield from extra

    def _guarded(self, out: Families, source: str, fill: Callable[[Families], None]) -> None:
        """Run ``fill`` on a scratch set and keep its samples only if it completes."""
        part = Families()
        try:
            fill(part)
        except Exception:
            # Why: a broken source must not break the scrape; the error counter is the signal.
            self._errors[source] += 1
            return
        out.merge(part)


def build_registry(collector: Collector) -> CollectorRegistry:
    """A fresh registry holding only ``collector`` (no process or platform collectors)."""
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def package_version() -> str:
    """The installed modelwatch version, or ``"unknown"`` when running from a bare checkout."""
    try:
        return metadata.version("modelwatch")
    except metadata.PackageNotFoundError:
        return "unknown"
