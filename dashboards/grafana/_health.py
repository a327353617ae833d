"""Layout of "modelwatch health" (modelwatch-health): is the monitoring itself working.

Ingest, the prediction logger in the model server, the spool and Elasticsearch shipping, the
collector, and the processes. A quiet dashboard here is what makes the other two trustworthy.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana import _alerting as alerting
from dashboards.grafana import _common as c
from dashboards.grafana import queries as q
from dashboards.grafana._grid import Grid


def build() -> model.Dashboard:
    """The health dashboard."""
    grid = Grid()
    grid.row("Targets and ingest")
    grid.add(
        c.state_timeline(
            q.TARGETS_UP,
            description="Whether Prometheus scraped each sidecar (job modelwatch-sidecar) and "
            "model server (job modelwatch-serving): 1 up, 0 down.",
            unit=c.UNITLESS,
            thresholds=((1, "green"),),
            base="red",
        ),
        width=24,
        height=6,
    )
    grid.add(
        c.time_series(
            q.INGEST_RATE,
            description="Events per second received by each sidecar in accepted requests, and "
            "those that passed validation (modelwatch_events_received_total, …accepted_total).",
            unit=c.PER_SECOND,
            min_value=0,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.EVENTS_REJECTED,
            description="Events dropped inside accepted requests, by reason "
            "(modelwatch_events_rejected_total).",
            unit=c.PER_SECOND,
            min_value=0,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.REQUESTS_REJECTED,
            description="Whole ingest requests refused with a 4xx, by reason "
            "(modelwatch_ingest_requests_rejected_total).",
            unit=c.REQUESTS_PER_SECOND,
            min_value=0,
        ),
        width=8,
    )
    grid.row("Prediction logger (model server)")
    grid.add(
        c.time_series(
            q.LOGGER_OUTCOMES,
            description="Predictions the model server's logger sent, dropped (sidecar away or "
            "buffer full) or had rejected, and those it did not log because of sampling "
            "(modelwatch_logger_events_total, modelwatch_logger_sampled_out_total).",
            unit=c.PER_SECOND,
            min_value=0,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.LOGGER_BUFFER,
            description="Logger buffer fill: events held over capacity "
            "(modelwatch_logger_buffer_events / modelwatch_logger_buffer_capacity_events). "
            "Staying high means the sidecar is not keeping up.",
            unit=c.RATIO,
            min_value=0,
            max_value=1,
            thresholds=((0.8, "red"),),
        ),
        width=12,
    )
    grid.row("Spool and shipping")
    grid.add(
        c.time_series(
            q.SHIPPING_LAG,
            description="Age of the oldest spooled request not yet shipped "
            "(modelwatch_spool_oldest_event_age_seconds); 0 when all is shipped. "
            f"ModelwatchShippingLag warns above {alerting.SHIPPING_LAG_WARNING:g} s and is "
            f"critical above {alerting.SHIPPING_LAG_CRITICAL:g} s.",
            unit=c.SECONDS,
            min_value=0,
            thresholds=(
                (alerting.SHIPPING_LAG_WARNING, "orange"),
                (alerting.SHIPPING_LAG_CRITICAL, "red"),
            ),
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.SPOOL_BYTES,
            description="Bytes of spool segment files on disk (modelwatch_spool_bytes); the "
            "limit is MODELWATCH_SPOOL_MAX_BYTES.",
            unit=c.BYTES,
            min_value=0,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.SHIPPING_OUTCOMES,
            description="Documents per second by outcome (modelwatch_es_documents_total): "
            "shipped, retried, failed (dead-lettered), dropped (lost).",
            unit=c.PER_SECOND,
            min_value=0,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.SHIPPING_ERRORS,
            description="Lines written to the dead-letter files (modelwatch_es_dead_letter_"
            "total) and spool segments found damaged (modelwatch_spool_corrupt_segments_total), "
            "per rate interval.",
            unit=c.COUNT,
            min_value=0,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.BULK_DURATION,
            description="p50 and p99 duration of one bulk send to Elasticsearch "
            "(modelwatch_es_bulk_duration_seconds), answered or failed.",
            unit=c.SECONDS,
            min_value=0,
        ),
        width=12,
    )
    grid.row("Sidecar internals")
    grid.add(
        c.time_series(
            q.COLLECTOR_ERRORS,
            description="Scrapes in which a metric source raised and was left out, by source "
            "(modelwatch_collector_errors_total). Any increase is a sidecar bug.",
            unit=c.COUNT,
            min_value=0,
        ),
        width=6,
    )
    grid.add(
        c.time_series(
            q.COLLECTOR_DURATION,
            description="Time the collector took to gather the last scrape's metrics "
            "(modelwatch_collector_duration_seconds); compare with the scrape timeout.",
            unit=c.SECONDS,
            min_value=0,
        ),
        width=6,
    )
    grid.add(
        c.time_series(
            q.PROCESS_CPU,
            description="CPU seconds per second used by the sidecar and model server processes "
            "(process_cpu_seconds_total).",
            unit=c.COUNT,
            min_value=0,
        ),
        width=6,
    )
    grid.add(
        c.time_series(
            q.PROCESS_MEMORY,
            description="Resident memory of the sidecar and model server processes "
            "(process_resident_memory_bytes).",
            unit=c.BYTES,
            min_value=0,
        ),
        width=6,
    )
    return c.dashboard(
        q.HEALTH,
        "modelwatch health",
        "Whether modelwatch itself works: ingest, logger, spool, shipping, collector.",
        ("health",),
        grid,
    )
