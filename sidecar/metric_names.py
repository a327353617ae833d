"""The Prometheus metrics contract: every metric's name, type, label names and help text.

This is the one place metric names live; ``docs/metrics.md`` documents the same list and a test
fails when the two drift apart. Labels are bounded by construction: model and version come from
the loaded profiles, ``feature`` and ``bin`` from the profiles' feature names and PSI bins,
``status``, ``reason``, ``outcome`` and ``source`` from closed sets. No id or feature value ever
becomes a label. ``sidecar.metrics`` re-exports everything here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BUILD_INFO",
    "COLLECTOR_DURATION",
    "COLLECTOR_ERRORS",
    "ERROR_SOURCES",
    "ES_BULK_DURATION",
    "ES_DEAD_LETTER",
    "ES_DOCUMENTS",
    "ES_LAST_SUCCESS",
    "ES_OUTCOMES",
    "EVENTS_ACCEPTED",
    "EVENTS_RECEIVED",
    "EVENTS_REJECTED",
    "FEATURE_BIN",
    "FEATURE_CHI2_PVALUE",
    "FEATURE_DRIFT_DETECTED",
    "FEATURE_KS_PVALUE",
    "FEATURE_KS_STATISTIC",
    "FEATURE_MISSING",
    "FEATURE_OUT_OF_RANGE",
    "FEATURE_PSI",
    "FEATURE_REFERENCE_MISSING_RATIO",
    "FEATURE_REFERENCE_RATIO",
    "FEATURE_TYPE_ERRORS",
    "FEATURE_UNSEEN_CATEGORIES",
    "FEEDBACK_LABELS",
    "LATENCY",
    "METRICS",
    "MODEL_ACCURACY",
    "MODEL_LABELLED",
    "MODEL_MAE",
    "PREDICTIONS",
    "PREDICTION_BIN",
    "PREDICTION_CHI2_PVALUE",
    "PREDICTION_DRIFT_DETECTED",
    "PREDICTION_KS_PVALUE",
    "PREDICTION_KS_STATISTIC",
    "PREDICTION_PSI",
    "PREDICTION_REFERENCE_RATIO",
    "QUALITY_METRICS",
    "REQUESTS_REJECTED",
    "SPOOL_BYTES",
    "SPOOL_CORRUPT_SEGMENTS",
    "SPOOL_OLDEST_AGE",
    "UNKNOWN_FEATURES",
    "WINDOW_EVENTS",
    "MetricKind",
    "MetricSpec",
]

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
FEATURE_REFERENCE_MISSING_RATIO = MetricSpec(
    "modelwatch_feature_reference_missing_ratio",
    "gauge",
    _MVF,
    "Share of reference rows where the value was missing (the baseline for the missing ratio).",
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

# Prediction-log shipping (the spool and the shipper; see docs/metrics.md).
ES_DOCUMENTS = MetricSpec(
    "modelwatch_es_documents_total",
    "counter",
    ("outcome",),
    "Prediction-log and drift documents by what became of them: shipped, retried (one per "
    "resend), failed (rejected for good, dead-lettered), dropped (never spooled or queued).",
)
ES_DEAD_LETTER = MetricSpec(
    "modelwatch_es_dead_letter_total",
    "counter",
    (),
    "Documents and spool records that cannot be shipped, written to the dead-letter file.",
)
ES_LAST_SUCCESS = MetricSpec(
    "modelwatch_es_last_success_timestamp_seconds",
    "gauge",
    (),
    "Unix time of the last bulk request the sink answered for at least one document (0: never).",
)
ES_BULK_DURATION = MetricSpec(
    "modelwatch_es_bulk_duration_seconds",
    "histogram",
    (),
    "Time one bulk send to the sink took, answered or failed, in seconds.",
)
SPOOL_BYTES = MetricSpec(
    "modelwatch_spool_bytes", "gauge", (), "Bytes held in the spool's segments on disk."
)
SPOOL_OLDEST_AGE = MetricSpec(
    "modelwatch_spool_oldest_event_age_seconds",
    "gauge",
    (),
    "Age of the oldest spooled request not yet shipped, in seconds (0: nothing waiting).",
)
SPOOL_CORRUPT_SEGMENTS = MetricSpec(
    "modelwatch_spool_corrupt_segments_total",
    "counter",
    (),
    "Spool segments found corrupt or truncated and quarantined.",
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
    FEATURE_REFERENCE_MISSING_RATIO,
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
    ES_DOCUMENTS,
    ES_DEAD_LETTER,
    ES_LAST_SUCCESS,
    ES_BULK_DURATION,
    SPOOL_BYTES,
    SPOOL_OLDEST_AGE,
    SPOOL_CORRUPT_SEGMENTS,
)
"""Every metric this collector can export, in exposition order."""

ERROR_SOURCES = ("counters", "drift", "feedback", "ingest", "extra")
"""Values of the ``source`` label of ``modelwatch_collector_errors_total``."""

ES_OUTCOMES = ("shipped", "retried", "failed", "dropped")
"""Values of the ``outcome`` label of ``modelwatch_es_documents_total``."""

QUALITY_METRICS = {"accuracy": MODEL_ACCURACY, "mean_absolute_error": MODEL_MAE}
"""Which gauge carries each ``ModelQuality.metric``."""
