"""Metric families built at scrape time from each source the collector reads.

One builder per source: a monitor's cumulative counters, a monitor's drift snapshot, the
feedback store's model quality and the ingest counters, plus the protocols those sources
satisfy. A builder raises when its source hands it something inconsistent; the collector
catches that per source, so a builder never needs to guard itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sidecar.columns import PREDICTION_KEY, STATUSES
from sidecar.counters import IngestCounters
from sidecar.metric_names import (
    EVENTS_ACCEPTED,
    EVENTS_RECEIVED,
    EVENTS_REJECTED,
    FEATURE_BIN,
    FEATURE_CHI2_PVALUE,
    FEATURE_DRIFT_DETECTED,
    FEATURE_KS_PVALUE,
    FEATURE_KS_STATISTIC,
    FEATURE_MISSING,
    FEATURE_OUT_OF_RANGE,
    FEATURE_PSI,
    FEATURE_REFERENCE_MISSING_RATIO,
    FEATURE_REFERENCE_RATIO,
    FEATURE_TYPE_ERRORS,
    FEATURE_UNSEEN_CATEGORIES,
    FEEDBACK_LABELS,
    LATENCY,
    METRICS,
    MODEL_LABELLED,
    PREDICTION_BIN,
    PREDICTION_CHI2_PVALUE,
    PREDICTION_DRIFT_DETECTED,
    PREDICTION_KS_PVALUE,
    PREDICTION_KS_STATISTIC,
    PREDICTION_PSI,
    PREDICTION_REFERENCE_RATIO,
    PREDICTIONS,
    QUALITY_METRICS,
    REQUESTS_REJECTED,
    UNKNOWN_FEATURES,
    WINDOW_EVENTS,
    MetricSpec,
)
from sidecar.profile import Profile
from sidecar.snapshot import DriftSnapshot, FeatureCounters, FeatureDrift, MonitorCounters


class MonitorView(Protocol):
    """What the collector reads from one model monitor (``sidecar.engine.ModelMonitor``)."""

    @property
    def profile(self) -> Profile:
        """The reference profile the monitor compares against."""
        ...

    def drift(self) -> DriftSnapshot:
        """Drift statistics of the current window."""
        ...

    def counters(self) -> MonitorCounters:
        """Cumulative counters since start."""
        ...


class QualityView(Protocol):
    """One model version's quality from joined feedback (``sidecar.feedback.ModelQuality``)."""

    @property
    def model(self) -> str:
        """Model name."""
        ...

    @property
    def version(self) -> str:
        """Model version."""
        ...

    @property
    def metric(self) -> str:
        """``"accuracy"`` or ``"mean_absolute_error"``."""
        ...

    @property
    def value(self) -> float:
        """The metric's value over the labelled window."""
        ...

    @property
    def labels(self) -> int:
        """How many labelled predictions ``value`` is computed over."""
        ...


class QualitySource(Protocol):
    """Where model quality comes from (``sidecar.feedback.FeedbackStore``)."""

    def quality(self) -> Sequence[QualityView]:
        """Quality of every model version that has labelled predictions."""
        ...


class Families:
    """Metric families keyed by spec, created on first sample so empty ones are never exposed."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def _get(self, spec: MetricSpec) -> Metric:
        family = self._by_name.get(spec.name)
        if family is None:
            family = self._by_name[spec.name] = empty_family(spec)
        return family

    def add(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        """One counter or gauge sample."""
        family = self._get(spec)
        assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)  # noqa: S101 - spec kind
        family.add_metric(labels, value)

    def add_histogram(
        self,
        spec: MetricSpec,
        labels: Sequence[str],
        buckets: list[tuple[str, float]],
        total: float,
    ) -> None:
        """One histogram sample: cumulative ``(le, count)`` buckets and the sum."""
        family = self._get(spec)
        assert isinstance(family, HistogramMetricFamily)  # noqa: S101 - spec kind
        family.add_metric(labels, buckets, total)

    def merge(self, other: Families) -> None:
        """Take over ``other``'s samples (a source that completed)."""
        for name, family in other._by_name.items():
            mine = self._by_name.get(name)
            if mine is None:
                self._by_name[name] = family
            else:
                mine.samples.extend(family.samples)

    def families(self) -> Iterator[Metric]:
        """The families with samples, in ``METRICS`` order."""
        for spec in METRICS:
            family = self._by_name.get(spec.name)
            if family is not None and family.samples:
                yield family


def empty_family(spec: MetricSpec) -> Metric:
    """A family of the kind ``spec`` names, with no samples yet."""
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)


def add_counters(out: Families, monitor: MonitorView) -> None:
    """Traffic, PSI-bin and data-quality families from a monitor's cumulative counters."""
    c = monitor.counters()
    mv = (c.model, c.version)
    for status in STATUSES:
        out.add(PREDICTIONS, (*mv, status), float(c.predictions.get(status, 0)))
    out.add_histogram(LATENCY, mv, _latency_buckets(c), c.latency_sum)
    out.add(UNKNOWN_FEATURES, mv, float(c.unknown_features))
    profile = monitor.profile
    references = {feat.name: feat for feat in profile.features}
    for feat in c.features:
        reference = references[feat.feature]
        _add_bins(out, FEATURE_BIN, FEATURE_REFERENCE_RATIO, (*mv, feat.feature), feat)
        _add_quality_counters(out, (*mv, feat.feature), feat, reference.kind)
        out.add(FEATURE_REFERENCE_MISSING_RATIO, (*mv, feat.feature), reference.missing_ratio)
    if c.prediction is not None and profile.prediction is not None:
        labels = (*mv, PREDICTION_KEY)
        _add_bins(out, PREDICTION_BIN, PREDICTION_REFERENCE_RATIO, mv, c.prediction)
        _add_quality_counters(out, labels, c.prediction, profile.prediction.kind)
        out.add(FEATURE_REFERENCE_MISSING_RATIO, labels, profile.prediction.missing_ratio)


def _add_bins(
    out: Families,
    total: MetricSpec,
    ratio: MetricSpec,
    labels: tuple[str, ...],
    feat: FeatureCounters,
) -> None:
    counts = feat.bin_totals.tolist()
    ratios = feat.reference_ratios.tolist()
    if not len(feat.bins) == len(counts) == len(ratios):
        raise ValueError(f"feature {feat.feature!r}: bins, totals and ratios differ in length")
    for name, count, share in zip(feat.bins, counts, ratios, strict=True):
        out.add(total, (*labels, name), float(count))
        out.add(ratio, (*labels, name), float(share))


def _add_quality_counters(
    out: Families, labels: tuple[str, ...], feat: FeatureCounters, kind: str
) -> None:
    out.add(FEATURE_MISSING, labels, float(feat.missing))
    out.add(FEATURE_TYPE_ERRORS, labels, float(feat.type_errors))
    if kind == "numeric":
        out.add(FEATURE_OUT_OF_RANGE, labels, float(feat.out_of_range))
    else:
        out.add(FEATURE_UNSEEN_CATEGORIES, labels, float(feat.unseen))


def _latency_buckets(c: MonitorCounters) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs ending in ``+Inf``, whichever way the engine lists them."""
    bounds = list(c.latency_buckets)
    counts = [float(n) for n in c.latency_bucket_counts.tolist()]
    if len(counts) == len(bounds) + 1:
        bounds.append(math.inf)
    elif len(counts) != len(bounds):
        raise ValueError(f"{len(bounds)} latency bounds but {len(counts)} bucket counts")
    pairs = [(_le(bound), count) for bound, count in zip(bounds, counts, strict=True)]
    if not bounds or not math.isinf(bounds[-1]):
        pairs.append(("+Inf", float(c.latency_count)))
    return pairs


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def add_drift(out: Families, monitor: MonitorView) -> None:
    """Window size, PSI, test and drift-flag gauges from a monitor's drift snapshot."""
    snap = monitor.drift()
    mv = (snap.model, snap.version)
    out.add(WINDOW_EVENTS, mv, float(snap.window_events))
    for feat in snap.features:
        labels = (*mv, feat.feature)
        out.add(FEATURE_PSI, labels, feat.psi)
        _add_test(out, labels, feat, FEATURE_KS_STATISTIC, FEATURE_KS_PVALUE, FEATURE_CHI2_PVALUE)
        out.add(FEATURE_DRIFT_DETECTED, labels, 1.0 if feat.drifted else 0.0)
    if snap.prediction is not None:
        pred = snap.prediction
        out.add(PREDICTION_PSI, mv, pred.psi)
        _add_test(
            out, mv, pred, PREDICTION_KS_STATISTIC, PREDICTION_KS_PVALUE, PREDICTION_CHI2_PVALUE
        )
        out.add(PREDICTION_DRIFT_DETECTED, mv, 1.0 if pred.drifted else 0.0)


def _add_test(
    out: Families,
    labels: tuple[str, ...],
    feat: FeatureDrift,
    ks_statistic: MetricSpec,
    ks_pvalue: MetricSpec,
    chi2_pvalue: MetricSpec,
) -> None:
    if feat.test == "ks":
        out.add(ks_statistic, labels, feat.statistic)
        out.add(ks_pvalue, labels, feat.pvalue)
    else:
        out.add(chi2_pvalue, labels, feat.pvalue)


def add_quality(out: Families, quality: Sequence[QualityView]) -> None:
    """Model-quality gauges from joined feedback."""
    for q in quality:
        mv = (q.model, q.version)
        spec = QUALITY_METRICS.get(q.metric)
        if spec is None:
            raise ValueError(f"unknown quality metric {q.metric!r}")
        out.add(spec, mv, q.value)
        out.add(MODEL_LABELLED, mv, float(q.labels))


def add_ingest(out: Families, c: IngestCounters) -> None:
    """Ingest totals and rejections by reason."""
    out.add(EVENTS_RECEIVED, (), float(c.events_received))
    out.add(EVENTS_ACCEPTED, (), float(c.events_accepted))
    for reason, n in list(c.events_rejected.items()):
        out.add(EVENTS_REJECTED, (reason,), float(n))
    for reason, n in list(c.requests_rejected.items()):
        out.add(REQUESTS_REJECTED, (reason,), float(n))
    for outcome, n in list(c.feedback_labels.items()):
        out.add(FEEDBACK_LABELS, (outcome,), float(n))
