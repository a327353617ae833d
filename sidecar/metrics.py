"""The Prometheus metrics contract and the collector that exports it at scrape time.

Every metric name, label set and help text lives in ``METRICS`` below and in
``docs/metrics.md``; keep the two in step. ``ModelwatchCollector`` reads the monitors, the ingest
counters and the feedback store only when Prometheus scrapes, so the ingest path never touches a
metric object. Labels are bounded by construction: model and version come from the loaded
profiles, ``feature`` and ``bin`` from the profiles' feature names and PSI bins, ``status``,
``reason``, ``outcome`` and ``source`` from closed sets. No id or feature value ever becomes a
label.

A failing source yields fewer metrics and one more ``modelwatch_collector_errors_total``; a scrape
never fails. Drift statistics that are not yet defined (too few values in the window) are
exported as NaN, so their series exist from start-up and comparisons such as ``> 0.2`` are
false until there is enough data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Literal, Protocol

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from sidecar.columns import PREDICTION_KEY, STATUSES
from sidecar.counters import IngestCounters
from sidecar.profile import Profile
from sidecar.snapshot import DriftSnapshot, FeatureCounters, FeatureDrift, MonitorCounters

MetricKind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the contract: its full name, type, label names and help text."""

    name: str
    kind: MetricKind
    labels: tuple[str, ...]
    help: str


_MV = ("model", "version")
_MVF = ("model", "version", "feature")
_MVFB = ("model", "version", "feature", "bin")
_MVB = ("model", "version", "bin")

# Traffic.
PREDICTIONS = MetricSpec(
    "modelwatch_predictions_total", "counter", (*_MV, "status"), "Predictions seen, by status."
)
LATENCY = MetricSpec(
    "modelwatch_prediction_latency_seconds",
    "histogram",
    _MV,
    "Model server latency of each prediction, as reported by the model server, in seconds.",
)
UNKNOWN_FEATURES = MetricSpec(
    "modelwatch_unknown_features_total",
    "counter",
    _MV,
    "Feature values whose name the reference profile does not know.",
)
# Drift of the current window against the reference profile.
WINDOW_EVENTS = MetricSpec(
    "modelwatch_drift_window_events",
    "gauge",
    _MV,
    "Events in the current drift window.",
)
FEATURE_PSI = MetricSpec(
    "modelwatch_feature_psi",
    "gauge",
    _MVF,
    "Population stability index of the feature, current window vs reference (NaN: too few values).",
)
FEATURE_KS_STATISTIC = MetricSpec(
    "modelwatch_feature_ks_statistic",
    "gauge",
    _MVF,
    "Kolmogorov-Smirnov D of a numeric feature, current window vs reference (NaN: too few values).",
)
FEATURE_KS_PVALUE = MetricSpec(
    "modelwatch_feature_ks_pvalue",
    "gauge",
    _MVF,
    "Kolmogorov-Smirnov p-value of a numeric feature, before correction (NaN: too few values).",
)
FEATURE_CHI2_PVALUE = MetricSpec(
    "modelwatch_feature_chi2_pvalue",
    "gauge",
    _MVF,
    "Chi-square goodness-of-fit p-value of a categorical feature, before correction.",
)
FEATURE_DRIFT_DETECTED = MetricSpec(
    "modelwatch_feature_drift_detected",
    "gauge",
    _MVF,
    "1 when the feature's corrected p-value is below alpha, else 0.",
)
PREDICTION_PSI = MetricSpec(
    "modelwatch_prediction_psi",
    "gauge",
    _MV,
    "Population stability index of the model output, current window vs reference.",
)
PREDICTION_KS_STATISTIC = MetricSpec(
    "modelwatch_prediction_ks_statistic",
    "gauge",
    _MV,
    "Kolmogorov-Smirnov D of a numeric model output, current window vs reference.",
)
PREDICTION_KS_PVALUE = MetricSpec(
    "modelwatch_prediction_ks_pvalue",
    "gauge",
    _MV,
    "Kolmogorov-Smirnov p-value of a numeric model output.",
)
PREDICTION_CHI2_PVALUE = MetricSpec(
    "modelwatch_prediction_chi2_pvalue",
    "gauge",
    _MV,
    "Chi-square goodness-of-fit p-value of a categorical model output.",
)
PREDICTION_DRIFT_DETECTED = MetricSpec(
    "modelwatch_prediction_drift_detected",
    "gauge",
    _MV,
    "1 when the model output's p-value is below alpha, else 0.",
)
# PSI bins as counters, so recording rules can merge replicas.
FEATURE_BIN = MetricSpec(
    "modelwatch_feature_bin_total",
    "counter",
    _MVFB,
    "Feature values that fell in each PSI bin since start.",
)
FEATURE_REFERENCE_RATIO = MetricSpec(
    "modelwatch_feature_reference_ratio",
    "gauge",
    _MVFB,
    "Reference share of each PSI bin of the feature.",
)
PREDICTION_BIN = MetricSpec(
    "modelwatch_prediction_bin_total",
    "counter",
    _MVB,
    "Model outputs that fell in each PSI bin since start.",
)
PREDICTION_REFERENCE_RATIO = MetricSpec(
    "modelwatch_prediction_reference_ratio",
    "gauge",
    _MVB,
    "Reference share of each PSI bin of the model output.",
)
# Data quality (feature="__prediction__" is the model output).
FEATURE_MISSING = MetricSpec(
    "modelwatch_feature_missing_total",
    "counter",
    _MVF,
    "Values that were absent or null.",
)
FEATURE_TYPE_ERRORS = MetricSpec(
    "modelwatch_feature_type_errors_total",
    "counter",
    _MVF,
    "Values of a type the reference profile does not allow.",
)
FEATURE_OUT_OF_RANGE = MetricSpec(
    "modelwatch_feature_out_of_range_total",
    "counter",
    _MVF,
    "Numeric values outside the reference [min, max] range.",
)
FEATURE_UNSEEN_CATEGORIES = MetricSpec(
    "modelwatch_feature_unseen_categories_total",
    "counter",
    _MVF,
    "Categorical values not among the reference categories.",
)
# Model quality from feedback labels.
MODEL_ACCURACY = MetricSpec(
    "modelwatch_model_accuracy",
    "gauge",
    _MV,
    "Share of labelled predictions that were correct (classification).",
)
MODEL_MAE = MetricSpec(
    "modelwatch_model_mean_absolute_error",
    "gauge",
    _MV,
    "Mean absolute error of labelled predictions (regression), in the model output's unit.",
)
MODEL_LABELLED = MetricSpec(
    "modelwatch_model_labelled_predictions",
    "gauge",
    _MV,
    "Labelled predictions the model quality gauges are computed over.",
)
# Ingest.
EVENTS_RECEIVED = MetricSpec(
    "modelwatch_events_received_total",
    "counter",
    (),
    "Prediction events received in accepted requests.",
)
EVENTS_ACCEPTED = MetricSpec(
    "modelwatch_events_accepted_total", "counter", (), "Prediction events accepted."
)
EVENTS_REJECTED = MetricSpec(
    "modelwatch_events_rejected_total",
    "counter",
    ("reason",),
    "Prediction events rejected inside an accepted request, by reason.",
)
REQUESTS_REJECTED = MetricSpec(
    "modelwatch_ingest_requests_rejected_total",
    "counter",
    ("reason",),
    "Whole ingest requests refused, by reason.",
)
FEEDBACK_LABELS = MetricSpec(
    "modelwatch_feedback_labels_total",
    "counter",
    ("outcome",),
    "Feedback labels received, by what became of them.",
)
# The sidecar itself.
BUILD_INFO = MetricSpec(
    "modelwatch_build_info", "gauge", ("version",), "Always 1; the sidecar's version as a label."
)
COLLECTOR_ERRORS = MetricSpec(
    "modelwatch_collector_errors_total",
    "counter",
    ("source",),
    "Scrape-time failures of one metrics source; its metrics were left out of that scrape.",
)
COLLECTOR_DURATION = MetricSpec(
    "modelwatch_collector_duration_seconds",
    "gauge",
    (),
    "Time the collector took to gather this scrape's metrics, in seconds.",
)

METRICS: tuple[MetricSpec, ...] = (
    PREDICTIONS,
    LATENCY,
    UNKNOWN_FEATURES,
    WINDOW_EVENTS,
    FEATURE_PSI,
    FEATURE_KS_STATISTIC,
    FEATURE_KS_PVALUE,
    FEATURE_CHI2_PVALUE,
    FEATURE_DRIFT_DETECTED,
    PREDICTION_PSI,
    PREDICTION_KS_STATISTIC,
    PREDICTION_KS_PVALUE,
    PREDICTION_CHI2_PVALUE,
    PREDICTION_DRIFT_DETECTED,
    FEATURE_BIN,
    FEATURE_REFERENCE_RATIO,
    PREDICTION_BIN,
    PREDICTION_REFERENCE_RATIO,
    FEATURE_MISSING,
    FEATURE_TYPE_ERRORS,
    FEATURE_OUT_OF_RANGE,
    FEATURE_UNSEEN_CATEGORIES,
    MODEL_ACCURACY,
    MODEL_MAE,
    MODEL_LABELLED,
    EVENTS_RECEIVED,
    EVENTS_ACCEPTED,
    EVENTS_REJECTED,
    REQUESTS_REJECTED,
    FEEDBACK_LABELS,
    BUILD_INFO,
    COLLECTOR_ERRORS,
    COLLECTOR_DURATION,
)
"""Every metric this collector can export, in exposition order."""

ERROR_SOURCES = ("counters", "drift", "feedback", "ingest", "extra")
"""Values of the ``source`` label of ``modelwatch_collector_errors_total``."""

QUALITY_METRICS = {"accuracy": MODEL_ACCURACY, "mean_absolute_error": MODEL_MAE}
"""Which gauge carries each ``ModelQuality.metric``."""


# --------------------------------------------------------------------------- sources


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


# --------------------------------------------------------------------------- collector


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
        return (_family(spec) for spec in METRICS)

    def collect(self) -> Iterator[Metric]:
        """Every family with at least one sample, in ``METRICS`` order, then the extras."""
        started = self._timer()
        out = _Families()
        for monitor in self._monitors:
            self._guarded(out, "counters", partial(_add_counters, monitor=monitor))
            self._guarded(out, "drift", partial(_add_drift, monitor=monitor))
        self._guarded(out, "feedback", lambda part: _add_quality(part, self._feedback.quality()))
        self._guarded(out, "ingest", lambda part: _add_ingest(part, self._ingest))
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

    def _guarded(self, out: _Families, source: str, fill: Callable[[_Families], None]) -> None:
        """Run ``fill`` on a scratch set and keep its samples only if it completes."""
        part = _Families()
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


# --------------------------------------------------------------------------- builders


class _Families:
    """Metric families keyed by spec, created on first sample so empty ones are never exposed."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def _get(self, spec: MetricSpec) -> Metric:
        family = self._by_name.get(spec.name)
        if family is None:
            family = self._by_name[spec.name] = _family(spec)
        return family

    def add(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
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
        family = self._get(spec)
        assert isinstance(family, HistogramMetricFamily)  # noqa: S101 - spec kind
        family.add_metric(labels, buckets, total)

    def merge(self, other: _Families) -> None:
        for name, family in other._by_name.items():
            mine = self._by_name.get(name)
            if mine is None:
                self._by_name[name] = family
            else:
                mine.samples.extend(family.samples)

    def families(self) -> Iterator[Metric]:
        for spec in METRICS:
            family = self._by_name.get(spec.name)
            if family is not None and family.samples:
                yield family


def _family(spec: MetricSpec) -> Metric:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)


def _add_counters(out: _Families, monitor: MonitorView) -> None:
    c = monitor.counters()
    mv = (c.model, c.version)
    for status in STATUSES:
        out.add(PREDICTIONS, (*mv, status), float(c.predictions.get(status, 0)))
    out.add_histogram(LATENCY, mv, _latency_buckets(c), c.latency_sum)
    out.add(UNKNOWN_FEATURES, mv, float(c.unknown_features))
    profile = monitor.profile
    kinds = {feat.name: feat.kind for feat in profile.features}
    for feat in c.features:
        kind = kinds[feat.feature]
        _add_bins(out, FEATURE_BIN, FEATURE_REFERENCE_RATIO, (*mv, feat.feature), feat)
        _add_quality_counters(out, (*mv, feat.feature), feat, kind)
    if c.prediction is not None and profile.prediction is not None:
        _add_bins(out, PREDICTION_BIN, PREDICTION_REFERENCE_RATIO, mv, c.prediction)
        _add_quality_counters(out, (*mv, PREDICTION_KEY), c.prediction, profile.prediction.kind)


def _add_bins(
    out: _Families,
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
    out: _Families, labels: tuple[str, ...], feat: FeatureCounters, kind: str
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


def _add_drift(out: _Families, monitor: MonitorView) -> None:
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
    out: _Families,
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


def _add_quality(out: _Families, quality: Sequence[QualityView]) -> None:
    for q in quality:
        mv = (q.model, q.version)
        spec = QUALITY_METRICS.get(q.metric)
        if spec is None:
            raise ValueError(f"unknown quality metric {q.metric!r}")
        out.add(spec, mv, q.value)
        out.add(MODEL_LABELLED, mv, float(q.labels))


def _add_ingest(out: _Families, c: IngestCounters) -> None:
    out.add(EVENTS_RECEIVED, (), float(c.events_received))
    out.add(EVENTS_ACCEPTED, (), float(c.events_accepted))
    for reason, n in list(c.events_rejected.items()):
        out.add(EVENTS_REJECTED, (reason,), float(n))
    for reason, n in list(c.requests_rejected.items()):
        out.add(REQUESTS_REJECTED, (reason,), float(n))
    for outcome, n in list(c.feedback_labels.items()):
        out.add(FEEDBACK_LABELS, (outcome,), float(n))


def package_version() -> str:
    """The installed modelwatch version, or ``"unknown"`` when running from a bare checkout."""
    try:
        return metadata.version("modelwatch")
    except metadata.PackageNotFoundError:
        return "unknown"
