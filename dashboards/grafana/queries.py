"""Every PromQL query of the modelwatch Grafana dashboards, kept apart from their layout.

Each panel's queries live here under the panel's title; the layout modules (``_serving``,
``_drift``, ``_health``) only decide where a panel goes, how it looks and what it says. Queries
keep Grafana's variables (``$namespace``, ``$model``, ``$version``, ``$__rate_interval``) so that
``all_queries()`` hands tests the exact text Grafana sends, and ``substitute_variables`` turns one
into plain PromQL to run against a Prometheus.

A query never filters its result with a comparison (``> 0``): a healthy system must still draw
every panel, with zeros where nothing is wrong. The few panels that need a source outside the
sidecar and the model server say so in ``Query.needs``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from dashboards.grafana._alerting import BURN_WINDOWS, ERROR_BUDGET, LATENCY_BUDGET

__all__ = [
    "DRIFT",
    "HEALTH",
    "SERVING",
    "UIDS",
    "PanelQueries",
    "Query",
    "Source",
    "all_queries",
    "panels",
    "required_queries",
    "substitute_variables",
]

SERVING: Final = "modelwatch-serving"
DRIFT: Final = "modelwatch-drift"
HEALTH: Final = "modelwatch-health"
UIDS: Final = (SERVING, DRIFT, HEALTH)

Source = Literal["cadvisor", "dcgm", "feedback"]
"""Series from outside the sidecar and the model server, or that appear only after an event."""


@dataclass(frozen=True, slots=True)
class Query:
    """One panel target: PromQL with Grafana variables, its legend, and what it needs."""

    expr: str
    legend: str
    needs: Source | None = None
    instant: bool = False


@dataclass(frozen=True, slots=True)
class PanelQueries:
    """The queries of one panel, under the dashboard uid and the panel title they belong to."""

    uid: str
    title: str
    queries: tuple[Query, ...]


_PANELS: list[PanelQueries] = []


def _panel(uid: str, title: str, *queries: Query) -> PanelQueries:
    panel = PanelQueries(uid, title, queries)
    _PANELS.append(panel)
    return panel


# Selectors. Multi-value variables become regular expressions, hence =~ everywhere.
NS = 'namespace=~"$namespace"'
MV = f'{NS}, model=~"$model", version=~"$version"'
RI = "[$__rate_interval]"
JOBS = 'job=~"modelwatch-sidecar|modelwatch-serving"'
CONTAINERS = 'container=~"model-server|modelwatch-sidecar"'
PREDICT_ROUTE = 'route=~".+:predict"'
NOT_5XX = 'code!~"5.."'
BY_MV = "namespace, model, version"
L_MV = "{{namespace}} {{model}} {{version}}"
L_POD = "{{pod}}"


def _quantiles(metric: str, selector: str, by: str, legend: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}{RI})))",
            f"p{round(q * 100)} {legend}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def _ratio(metric: str, part: str, selector: str, by: str) -> str:
    return (
        f"sum by ({by}) (rate({metric}{{{selector}, {part}}}{RI}))\n"
        f"  / sum by ({by}) (rate({metric}{{{selector}}}{RI}))"
    )


def _burn(sli: str, budget: float) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"namespace_model_version:modelwatch_prediction_{sli}:ratio_rate{w.label}{{{MV}}}"
            f" / {budget:g}",
            f"{L_MV} {w.label}",
        )
        for w in BURN_WINDOWS
    )


def _model_pods(expr: str) -> str:
    """Keep the series of pods that serve the selected models (cAdvisor and DCGM know no model)."""
    return (
        f"{expr}\n  and on (namespace, pod)\n"
        f"  group by (namespace, pod) (modelwatch_serving_model_ready{{{MV}}})"
    )


# ------------------------------------------------------------------ serving
REQUEST_RATE = _panel(
    SERVING,
    "Request rate",
    Query(
        "sum by (namespace, model, version, route, code) "
        f"(rate(modelwatch_serving_request_duration_seconds_count{{{MV}}}{RI}))",
        "{{model}} {{version}} {{route}} {{code}}",
    ),
)
PREDICTION_RATE = _panel(
    SERVING,
    "Predictions",
    Query(
        f"sum by ({BY_MV}, status) (rate(modelwatch_serving_predictions_total{{{MV}}}{RI}))",
        f"served {L_MV} {{{{status}}}}",
    ),
    Query(
        f"sum by ({BY_MV}) (rate(modelwatch_predictions_total{{{MV}}}{RI}))",
        f"monitored {L_MV}",
    ),
)
ERROR_RATIO = _panel(
    SERVING,
    "Error ratio",
    Query(
        _ratio("modelwatch_serving_predictions_total", 'status="error"', MV, BY_MV),
        f"predictions {L_MV}",
    ),
    # 1 - non-5xx share: the series exists while any request is answered, 5xx or not. Predict
    # route only: health probes and scrapes would dilute it, and a 503 from /readyz while the
    # model loads is no failed prediction.
    Query(
        "1 - "
        + _ratio(
            "modelwatch_serving_request_duration_seconds_count",
            NOT_5XX,
            f"{MV}, {PREDICT_ROUTE}",
            BY_MV,
        ),
        f"HTTP 5xx {L_MV}",
    ),
)
REQUEST_LATENCY = _panel(
    SERVING,
    "Predict request latency (model server)",
    *_quantiles(
        "modelwatch_serving_request_duration_seconds", f"{MV}, {PREDICT_ROUTE}", BY_MV, L_MV
    ),
)
PREDICTION_LATENCY = _panel(
    SERVING,
    "Prediction latency (sidecar)",
    *_quantiles("modelwatch_prediction_latency_seconds", MV, BY_MV, L_MV),
)
LATENCY_HEATMAP = _panel(
    SERVING,
    "Predict request latency heatmap",
    Query(
        "sum by (le) (rate(modelwatch_serving_request_duration_seconds_bucket"
        f"{{{MV}, {PREDICT_ROUTE}}}{RI}))",
        "{{le}}",
    ),
)
BATCH_SIZE = _panel(
    SERVING,
    "Batch size",
    *_quantiles("modelwatch_serving_batch_size", MV, BY_MV, L_MV)[:2],
    Query(
        f"sum by ({BY_MV}) (rate(modelwatch_serving_batch_size_sum{{{MV}}}{RI}))\n"
        f"  / sum by ({BY_MV}) (rate(modelwatch_serving_batch_size_count{{{MV}}}{RI}))",
        f"mean {L_MV}",
    ),
)
IN_FLIGHT = _panel(
    SERVING,
    "In-flight and queued requests",
    Query(f"modelwatch_serving_requests_in_flight{{{MV}}}", f"in flight {L_POD}"),
    Query(f"modelwatch_serving_queue_depth{{{MV}}}", f"queued {L_POD}"),
)
VERSION_COMPARISON = _panel(
    SERVING,
    "Per-version comparison",
    Query(
        f"sum by ({BY_MV}) (rate(modelwatch_serving_predictions_total{{{MV}}}{RI}))",
        "predictions/s",
        instant=True,
    ),
    Query(
        _ratio("modelwatch_serving_predictions_total", 'status="error"', MV, BY_MV),
        "error ratio",
        instant=True,
    ),
    Query(
        f"histogram_quantile(0.99, sum by ({BY_MV}, le) "
        f"(rate(modelwatch_prediction_latency_seconds_bucket{{{MV}}}{RI})))",
        "p99 latency",
        instant=True,
    ),
)
VERSION_LATENCY = _panel(
    SERVING,
    "p99 latency by version",
    Query(
        f"histogram_quantile(0.99, sum by ({BY_MV}, le) "
        f"(rate(modelwatch_prediction_latency_seconds_bucket{{{MV}}}{RI})))",
        L_MV,
    ),
)
LATENCY_BURN = _panel(SERVING, "Latency SLO burn rate", *_burn("latency_slow", LATENCY_BUDGET))
ERROR_BURN = _panel(SERVING, "Error SLO burn rate", *_burn("errors", ERROR_BUDGET))
CONTAINER_CPU = _panel(
    SERVING,
    "Container CPU",
    Query(
        _model_pods(
            "sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total"
            f"{{{NS}, {CONTAINERS}}}{RI}))"
        ),
        "{{pod}} {{container}}",
        needs="cadvisor",
    ),
)
CONTAINER_MEMORY = _panel(
    SERVING,
    "Container memory (working set)",
    Query(
        _model_pods(
            "sum by (namespace, pod, container) "
            f"(container_memory_working_set_bytes{{{NS}, {CONTAINERS}}})"
        ),
        "{{pod}} {{container}}",
        needs="cadvisor",
    ),
)
GPU_UTILISATION = _panel(
    SERVING,
    "GPU utilisation",
    Query(
        _model_pods(f"max by (namespace, pod, gpu) (DCGM_FI_DEV_GPU_UTIL{{{NS}}})"),
        "{{pod}} GPU {{gpu}}",
        needs="dcgm",
    ),
)

# ------------------------------------------------------------------ drift
_FEATURE = "{{model}} {{version}} {{feature}}"
_POD_FEATURE = "{{pod}} {{model}} {{version}} {{feature}}"
_DQ = "namespace_model_version_feature:modelwatch_feature_{}:ratio_rate15m{{" + MV + "}}"

FEATURE_PSI = _panel(
    DRIFT, "PSI per feature (per pod)", Query(f"modelwatch_feature_psi{{{MV}}}", _POD_FEATURE)
)
FLEET_PSI = _panel(
    DRIFT,
    "Fleet PSI per feature (1h)",
    Query(f"namespace_model_version_feature:modelwatch_feature_psi:fleet1h{{{MV}}}", _FEATURE),
)
PSI_TIMELINE = _panel(
    DRIFT,
    "PSI by feature over time",
    Query(f"max by ({BY_MV}, feature) (modelwatch_feature_psi{{{MV}}})", _FEATURE),
)
DRIFTED_FEATURES = _panel(
    DRIFT,
    "Drifted features",
    # A feature counts once when it drifts on any pod of the model version.
    Query(
        f"sum by ({BY_MV}) (max by ({BY_MV}, feature) (modelwatch_feature_drift_detected{{{MV}}}))",
        L_MV,
    ),
)
KS_STATISTIC = _panel(
    DRIFT,
    "KS statistic per feature",
    Query(f"modelwatch_feature_ks_statistic{{{MV}}}", _POD_FEATURE),
)
DRIFT_PVALUES = _panel(
    DRIFT,
    "Drift test p-values (before correction)",
    Query(f"modelwatch_feature_ks_pvalue{{{MV}}}", f"KS {_POD_FEATURE}"),
    Query(f"modelwatch_feature_chi2_pvalue{{{MV}}}", f"χ² {_POD_FEATURE}"),
)
PREDICTION_DRIFT = _panel(
    DRIFT,
    "Prediction drift (PSI)",
    Query(f"modelwatch_prediction_psi{{{MV}}}", f"{L_POD} {{{{model}}}} {{{{version}}}}"),
    Query(
        f"namespace_model_version:modelwatch_prediction_psi:fleet1h{{{MV}}}",
        f"fleet 1h {L_MV}",
    ),
)
WINDOW_EVENTS = _panel(
    DRIFT,
    "Events in the drift window",
    Query(f"modelwatch_drift_window_events{{{MV}}}", f"{L_POD} {{{{model}}}} {{{{version}}}}"),
)
MISSING_RATIO = _panel(
    DRIFT,
    "Missing values ratio",
    Query(_DQ.format("missing"), _FEATURE),
    Query(
        f"max by ({BY_MV}, feature) (modelwatch_feature_reference_missing_ratio{{{MV}}})",
        f"reference {_FEATURE}",
    ),
)
OUT_OF_RANGE_RATIO = _panel(
    DRIFT, "Out-of-range ratio", Query(_DQ.format("out_of_range"), _FEATURE)
)
TYPE_ERROR_RATIO = _panel(DRIFT, "Type-error ratio", Query(_DQ.format("type_errors"), _FEATURE))
UNSEEN_VALUES = _panel(
    DRIFT,
    "Unseen categories and unknown features",
    Query(
        f"sum by ({BY_MV}, feature) (rate(modelwatch_feature_unseen_categories_total{{{MV}}}{RI}))",
        f"unseen {_FEATURE}",
    ),
    Query(
        f"sum by ({BY_MV}) (rate(modelwatch_unknown_features_total{{{MV}}}{RI}))",
        f"unknown features {L_MV}",
    ),
)
ACCURACY = _panel(
    DRIFT,
    "Accuracy (labelled predictions)",
    Query(
        f"namespace_model_version:modelwatch_model_accuracy:weighted{{{MV}}}",
        f"weighted {L_MV}",
        needs="feedback",
    ),
    Query(
        f"modelwatch_model_accuracy{{{MV}}}",
        f"{L_POD} {{{{model}}}} {{{{version}}}}",
        needs="feedback",
    ),
)
LABELLED = _panel(
    DRIFT,
    "Labelled predictions",
    Query(
        f"sum by ({BY_MV}) (modelwatch_model_labelled_predictions{{{MV}}})",
        L_MV,
        needs="feedback",
    ),
)

# ------------------------------------------------------------------ health

TARGETS_UP = _panel(HEALTH, "Scrape targets up", Query(f"up{{{NS}, {JOBS}}}", "{{job}} {{pod}}"))
INGEST_RATE = _panel(
    HEALTH,
    "Ingested events",
    Query(
        f"sum by (namespace, pod) (rate(modelwatch_events_received_total{{{NS}}}{RI}))",
        f"received {L_POD}",
    ),
    Query(
        f"sum by (namespace, pod) (rate(modelwatch_events_accepted_total{{{NS}}}{RI}))",
        f"accepted {L_POD}",
    ),
)
EVENTS_REJECTED = _panel(
    HEALTH,
    "Rejected events by reason",
    Query(
        f"sum by (namespace, pod, reason) (rate(modelwatch_events_rejected_total{{{NS}}}{RI}))",
        "{{pod}} {{reason}}",
    ),
)
REQUESTS_REJECTED = _panel(
    HEALTH,
    "Rejected ingest requests by reason",
    Query(
        "sum by (namespace, pod, reason) "
        f"(rate(modelwatch_ingest_requests_rejected_total{{{NS}}}{RI}))",
        "{{pod}} {{reason}}",
    ),
)
LOGGER_OUTCOMES = _panel(
    HEALTH,
    "Prediction logger outcomes",
    Query(
        f"sum by (namespace, pod, outcome) (rate(modelwatch_logger_events_total{{{MV}}}{RI}))",
        "{{pod}} {{outcome}}",
    ),
    Query(
        f"sum by (namespace, pod) (rate(modelwatch_logger_sampled_out_total{{{MV}}}{RI}))",
        "{{pod}} sampled out",
    ),
)
LOGGER_BUFFER = _panel(
    HEALTH,
    "Prediction logger buffer fill",
    Query(
        f"modelwatch_logger_buffer_events{{{MV}}}\n"
        f"  / modelwatch_logger_buffer_capacity_events{{{MV}}}",
        f"{L_POD} {{{{model}}}} {{{{version}}}}",
    ),
)
SPOOL_BYTES = _panel(HEALTH, "Spool size", Query(f"modelwatch_spool_bytes{{{NS}}}", L_POD))
SHIPPING_LAG = _panel(
    HEALTH,
    "Shipping lag (oldest unshipped event)",
    Query(f"modelwatch_spool_oldest_event_age_seconds{{{NS}}}", L_POD),
)
SHIPPING_OUTCOMES = _panel(
    HEALTH,
    "Shipped documents by outcome",
    Query(
        f"sum by (namespace, pod, outcome) (rate(modelwatch_es_documents_total{{{NS}}}{RI}))",
        "{{pod}} {{outcome}}",
    ),
)
SHIPPING_ERRORS = _panel(
    HEALTH,
    "Dead letters and corrupt spool segments",
    Query(
        f"sum by (namespace, pod) (increase(modelwatch_es_dead_letter_total{{{NS}}}{RI}))",
        f"dead-lettered {L_POD}",
    ),
    Query(
        f"sum by (namespace, pod) (increase(modelwatch_spool_corrupt_segments_total{{{NS}}}{RI}))",
        f"corrupt segments {L_POD}",
    ),
)
BULK_DURATION = _panel(
    HEALTH,
    "Bulk request duration",
    *_quantiles("modelwatch_es_bulk_duration_seconds", NS, "namespace, pod", L_POD)[::2],
)
COLLECTOR_ERRORS = _panel(
    HEALTH,
    "Collector errors by source",
    Query(
        "sum by (namespace, pod, source) "
        f"(increase(modelwatch_collector_errors_total{{{NS}}}{RI}))",
        "{{pod}} {{source}}",
    ),
)
COLLECTOR_DURATION = _panel(
    HEALTH,
    "Collector duration",
    Query(f"modelwatch_collector_duration_seconds{{{NS}}}", L_POD),
)
PROCESS_CPU = _panel(
    HEALTH,
    "Process CPU",
    Query(
        f"sum by (namespace, pod, job) (rate(process_cpu_seconds_total{{{NS}, {JOBS}}}{RI}))",
        "{{job}} {{pod}}",
    ),
)
PROCESS_MEMORY = _panel(
    HEALTH,
    "Process resident memory",
    Query(f"process_resident_memory_bytes{{{NS}, {JOBS}}}", "{{job}} {{pod}}"),
)


# ------------------------------------------------------------------ public helpers
def panels(uid: str | None = None) -> tuple[PanelQueries, ...]:
    """The panels' queries, of one dashboard or of all, in declaration order."""
    return tuple(p for p in _PANELS if uid is None or p.uid == uid)


def all_queries() -> list[tuple[str, str, str]]:
    """Every query as ``(dashboard uid, panel title, expr)``, Grafana variables left in."""
    return [(p.uid, p.title, q.expr) for p in _PANELS for q in p.queries]


def required_queries(
    available: frozenset[Source] = frozenset(),
) -> list[tuple[str, str, str]]:
    """The queries that must return data with the sidecar and model server scraped.

    ``available`` names the extra sources present (cAdvisor, DCGM, joined feedback labels);
    queries needing any other source are left out.
    """
    return [
        (p.uid, p.title, q.expr)
        for p in _PANELS
        for q in p.queries
        if q.needs is None or q.needs in available
    ]


_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def substitute_variables(
    expr: str,
    *,
    rate_interval: str = "1m",
    interval: str = "15s",
    range_: str = "1h",
    values: Mapping[str, str] | None = None,
) -> str:
    """Replace Grafana's variables in ``expr`` so that Prometheus can run it.

    ``$namespace``, ``$model`` and ``$version`` become ``.*`` (Grafana's "All") unless ``values``
    gives them; ``$__rate_interval``, ``$__interval`` and ``$__range`` become the given durations.
    An unknown variable raises ``ValueError`` naming it.
    """
    known = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__range": range_,
        "namespace": ".*",
        "model": ".*",
        "version": ".*",
        **(values or {}),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in known:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return known[name]

    return _VARIABLE.sub(replace, expr)
