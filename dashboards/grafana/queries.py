"""Every PromQL query of the modelwatch Grafana dashboards, kept apart from their layout.

Each panel's queries live under the panel's title in ``_queries_serving``, ``_queries_drift``
and ``_queries_health`` (built from ``_queries_common``); this module is their public door. The
layout modules (``_serving``, ``_drift``, ``_health``) only decide where a panel goes, how it looks
and what it says. Queries keep Grafana's variables (``$namespace``, ``$model``, ``$version``,
``$__rate_interval``) so that ``all_queries()`` hands tests the exact text Grafana sends, and
``substitute_variables`` turns one into plain PromQL to run against a Prometheus.

A query never filters its result with a comparison (``> 0``): a healthy system must still draw
every panel, with zeros where nothing is wrong. The few panels that need a source outside the
sidecar and the model server say so in ``Query.needs``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from dashboards.grafana import _queries_drift, _queries_health, _queries_serving
from dashboards.grafana._queries_common import (
    DRIFT,
    HEALTH,
    SERVING,
    UIDS,
    PanelQueries,
    Query,
    Source,
)
from dashboards.grafana._queries_drift import (
    ACCURACY,
    DRIFT_PVALUES,
    DRIFTED_FEATURES,
    FEATURE_PSI,
    FLEET_PSI,
    KS_STATISTIC,
    LABELLED,
    MISSING_RATIO,
    OUT_OF_RANGE_RATIO,
    PREDICTION_DRIFT,
    PSI_TIMELINE,
    TYPE_ERROR_RATIO,
    UNSEEN_VALUES,
    WINDOW_EVENTS,
)
from dashboards.grafana._queries_health import (
    BULK_DURATION,
    COLLECTOR_DURATION,
    COLLECTOR_ERRORS,
    EVENTS_REJECTED,
    INGEST_RATE,
    LOGGER_BUFFER,
    LOGGER_OUTCOMES,
    PROCESS_CPU,
    PROCESS_MEMORY,
    REQUESTS_REJECTED,
    SHIPPING_ERRORS,
    SHIPPING_LAG,
    SHIPPING_OUTCOMES,
    SPOOL_BYTES,
    TARGETS_UP,
)
from dashboards.grafana._queries_serving import (
    BATCH_SIZE,
    CONTAINER_CPU,
    CONTAINER_MEMORY,
    ERROR_BURN,
    ERROR_RATIO,
    GPU_UTILISATION,
    IN_FLIGHT,
    LATENCY_BURN,
    LATENCY_HEATMAP,
    PREDICTION_LATENCY,
    PREDICTION_RATE,
    REQUEST_LATENCY,
    REQUEST_RATE,
    VERSION_COMPARISON,
    VERSION_LATENCY,
)

__all__ = [
    "ACCURACY",
    "BATCH_SIZE",
    "BULK_DURATION",
    "COLLECTOR_DURATION",
    "COLLECTOR_ERRORS",
    "CONTAINER_CPU",
    "CONTAINER_MEMORY",
    "DRIFT",
    "DRIFTED_FEATURES",
    "DRIFT_PVALUES",
    "ERROR_BURN",
    "ERROR_RATIO",
    "EVENTS_REJECTED",
    "FEATURE_PSI",
    "FLEET_PSI",
    "GPU_UTILISATION",
    "HEALTH",
    "INGEST_RATE",
    "IN_FLIGHT",
    "KS_STATISTIC",
    "LABELLED",
    "LATENCY_BURN",
    "LATENCY_HEATMAP",
    "LOGGER_BUFFER",
    "LOGGER_OUTCOMES",
    "MISSING_RATIO",
    "OUT_OF_RANGE_RATIO",
    "PREDICTION_DRIFT",
    "PREDICTION_LATENCY",
    "PREDICTION_RATE",
    "PROCESS_CPU",
    "PROCESS_MEMORY",
    "PSI_TIMELINE",
    "REQUESTS_REJECTED",
    "REQUEST_LATENCY",
    "REQUEST_RATE",
    "SERVING",
    "SHIPPING_ERRORS",
    "SHIPPING_LAG",
    "SHIPPING_OUTCOMES",
    "SPOOL_BYTES",
    "TARGETS_UP",
    "TYPE_ERROR_RATIO",
    "UIDS",
    "UNSEEN_VALUES",
    "VERSION_COMPARISON",
    "VERSION_LATENCY",
    "WINDOW_EVENTS",
    "PanelQueries",
    "Query",
    "Source",
    "all_queries",
    "panels",
    "required_queries",
    "substitute_variables",
]

# The dashboards in UIDS order, each one's panels in declaration order.
_PANELS: Final = (*_queries_serving.PANELS, *_queries_drift.PANELS, *_queries_health.PANELS)


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
