"""The queries of the serving dashboard: traffic, latency, errors, SLO burn and resources.

Panels the layout module ``_serving`` places, each under its title. Container and GPU panels read
cAdvisor and DCGM series, kept to the pods that serve the selected models.
"""

from __future__ import annotations

from typing import Final

from dashboards.grafana._alerting import ERROR_BUDGET, LATENCY_BUDGET
from dashboards.grafana._queries_common import (
    BY_MV,
    CONTAINERS,
    L_MV,
    L_POD,
    MV,
    NOT_5XX,
    NS,
    PREDICT_ROUTE,
    RI,
    SERVING,
    Board,
    Query,
    burn,
    model_pods,
    quantiles,
    ratio,
)

__all__ = [
    "BATCH_SIZE",
    "CONTAINER_CPU",
    "CONTAINER_MEMORY",
    "ERROR_BURN",
    "ERROR_RATIO",
    "GPU_UTILISATION",
    "IN_FLIGHT",
    "LATENCY_BURN",
    "LATENCY_HEATMAP",
    "PANELS",
    "PREDICTION_LATENCY",
    "PREDICTION_RATE",
    "REQUEST_LATENCY",
    "REQUEST_RATE",
    "VERSION_COMPARISON",
    "VERSION_LATENCY",
]

_BOARD = Board(SERVING)
_panel = _BOARD.panel

REQUEST_RATE = _panel(
    "Request rate",
    Query(
        "sum by (namespace, model, version, route, code) "
        f"(rate(modelwatch_serving_request_duration_seconds_count{{{MV}}}{RI}))",
        "{{model}} {{version}} {{route}} {{code}}",
    ),
)
PREDICTION_RATE = _panel(
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
    "Error ratio",
    Query(
        ratio("modelwatch_serving_predictions_total", 'status="error"', MV, BY_MV),
        f"predictions {L_MV}",
    ),
    # 1 - non-5xx share: the series exists while any request is answered, 5xx or not. Predict
    # route only: health probes and scrapes would dilute it, and a 503 from /readyz while the
    # model loads is no failed prediction.
    Query(
        "1 - "
        + ratio(
            "modelwatch_serving_request_duration_seconds_count",
            NOT_5XX,
            f"{MV}, {PREDICT_ROUTE}",
            BY_MV,
        ),
        f"HTTP 5xx {L_MV}",
    ),
)
REQUEST_LATENCY = _panel(
    "Predict request latency (model server)",
    *quantiles(
        "modelwatch_serving_request_duration_seconds", f"{MV}, {PREDICT_ROUTE}", BY_MV, L_MV
    ),
)
PREDICTION_LATENCY = _panel(
    "Prediction latency (sidecar)",
    *quantiles("modelwatch_prediction_latency_seconds", MV, BY_MV, L_MV),
)
LATENCY_HEATMAP = _panel(
    "Predict request latency heatmap",
    Query(
        "sum by (le) (rate(modelwatch_serving_request_duration_seconds_bucket"
        f"{{{MV}, {PREDICT_ROUTE}}}{RI}))",
        "{{le}}",
    ),
)
BATCH_SIZE = _panel(
    "Batch size",
    *quantiles("modelwatch_serving_batch_size", MV, BY_MV, L_MV)[:2],
    Query(
        f"sum by ({BY_MV}) (rate(modelwatch_serving_batch_size_sum{{{MV}}}{RI}))\n"
        f"  / sum by ({BY_MV}) (rate(modelwatch_serving_batch_size_count{{{MV}}}{RI}))",
        f"mean {L_MV}",
    ),
)
IN_FLIGHT = _panel(
    "In-flight and queued requests",
    Query(f"modelwatch_serving_requests_in_flight{{{MV}}}", f"in flight {L_POD}"),
    Query(f"modelwatch_serving_queue_depth{{{MV}}}", f"queued {L_POD}"),
)
VERSION_COMPARISON = _panel(
    "Per-version comparison",
    Query(
        f"sum by ({BY_MV}) (rate(modelwatch_serving_predictions_total{{{MV}}}{RI}))",
        "predictions/s",
        instant=True,
    ),
    Query(
        ratio("modelwatch_serving_predictions_total", 'status="error"', MV, BY_MV),
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
    "p99 latency by version",
    Query(
        f"histogram_quantile(0.99, sum by ({BY_MV}, le) "
        f"(rate(modelwatch_prediction_latency_seconds_bucket{{{MV}}}{RI})))",
        L_MV,
    ),
)
LATENCY_BURN = _panel("Latency SLO burn rate", *burn("latency_slow", LATENCY_BUDGET))
ERROR_BURN = _panel("Error SLO burn rate", *burn("errors", ERROR_BUDGET))
CONTAINER_CPU = _panel(
    "Container CPU",
    Query(
        model_pods(
            "sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total"
            f"{{{NS}, {CONTAINERS}}}{RI}))"
        ),
        "{{pod}} {{container}}",
        needs="cadvisor",
    ),
)
CONTAINER_MEMORY = _panel(
    "Container memory (working set)",
    Query(
        model_pods(
            "sum by (namespace, pod, container) "
            f"(container_memory_working_set_bytes{{{NS}, {CONTAINERS}}})"
        ),
        "{{pod}} {{container}}",
        needs="cadvisor",
    ),
)
GPU_UTILISATION = _panel(
    "GPU utilisation",
    Query(
        model_pods(f"max by (namespace, pod, gpu) (DCGM_FI_DEV_GPU_UTIL{{{NS}}})"),
        "{{pod}} GPU {{gpu}}",
        needs="dcgm",
    ),
)

PANELS: Final = _BOARD.panels()
"""This dashboard's panels, in declaration order."""
