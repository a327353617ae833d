"""The queries of the health dashboard: scrape targets, ingest, logger, spool, shipping, process.

Panels the layout module ``_health`` places, each under its title: whether the monitoring itself
works, from the sidecar's and the model server's own metrics.
"""

from __future__ import annotations

from typing import Final

from dashboards.grafana._queries_common import (
    HEALTH,
    JOBS,
    L_POD,
    MV,
    NS,
    RI,
    Board,
    Query,
    quantiles,
)

__all__ = [
    "BULK_DURATION",
    "COLLECTOR_DURATION",
    "COLLECTOR_ERRORS",
    "EVENTS_REJECTED",
    "INGEST_RATE",
    "LOGGER_BUFFER",
    "LOGGER_OUTCOMES",
    "PANELS",
    "PROCESS_CPU",
    "PROCESS_MEMORY",
    "REQUESTS_REJECTED",
    "SHIPPING_ERRORS",
    "SHIPPING_LAG",
    "SHIPPING_OUTCOMES",
    "SPOOL_BYTES",
    "TARGETS_UP",
]

_BOARD = Board(HEALTH)
_panel = _BOARD.panel

TARGETS_UP = _panel("Scrape targets up", Query(f"up{{{NS}, {JOBS}}}", "{{job}} {{pod}}"))
INGEST_RATE = _panel(
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
    "Rejected events by reason",
    Query(
        f"sum by (namespace, pod, reason) (rate(modelwatch_events_rejected_total{{{NS}}}{RI}))",
        "{{pod}} {{reason}}",
    ),
)
REQUESTS_REJECTED = _panel(
    "Rejected ingest requests by reason",
    Query(
        "sum by (namespace, pod, reason) "
        f"(rate(modelwatch_ingest_requests_rejected_total{{{NS}}}{RI}))",
        "{{pod}} {{reason}}",
    ),
)
LOGGER_OUTCOMES = _panel(
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
    "Prediction logger buffer fill",
    Query(
        f"modelwatch_logger_buffer_events{{{MV}}}\n"
        f"  / modelwatch_logger_buffer_capacity_events{{{MV}}}",
        f"{L_POD} {{{{model}}}} {{{{version}}}}",
    ),
)
SPOOL_BYTES = _panel("Spool size", Query(f"modelwatch_spool_bytes{{{NS}}}", L_POD))
SHIPPING_LAG = _panel(
    "Shipping lag (oldest unshipped event)",
    Query(f"modelwatch_spool_oldest_event_age_seconds{{{NS}}}", L_POD),
)
SHIPPING_OUTCOMES = _panel(
    "Shipped documents by outcome",
    Query(
        f"sum by (namespace, pod, outcome) (rate(modelwatch_es_documents_total{{{NS}}}{RI}))",
        "{{pod}} {{outcome}}",
    ),
)
SHIPPING_ERRORS = _panel(
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
    "Bulk request duration",
    *quantiles("modelwatch_es_bulk_duration_seconds", NS, "namespace, pod", L_POD)[::2],
)
COLLECTOR_ERRORS = _panel(
    "Collector errors by source",
    Query(
        "sum by (namespace, pod, source) "
        f"(increase(modelwatch_collector_errors_total{{{NS}}}{RI}))",
        "{{pod}} {{source}}",
    ),
)
COLLECTOR_DURATION = _panel(
    "Collector duration",
    Query(f"modelwatch_collector_duration_seconds{{{NS}}}", L_POD),
)
PROCESS_CPU = _panel(
    "Process CPU",
    Query(
        f"sum by (namespace, pod, job) (rate(process_cpu_seconds_total{{{NS}, {JOBS}}}{RI}))",
        "{{job}} {{pod}}",
    ),
)
PROCESS_MEMORY = _panel(
    "Process resident memory",
    Query(f"process_resident_memory_bytes{{{NS}, {JOBS}}}", "{{job}} {{pod}}"),
)

PANELS: Final = _BOARD.panels()
"""This dashboard's panels, in declaration order."""
