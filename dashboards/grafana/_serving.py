"""Layout of "Model serving overview" (modelwatch-serving): traffic, latency, SLOs, resources.

For SREs on call: the first row answers "is the model serving, fast and correct", the SLO row
"how fast are we spending the budget", the last row "is it short of CPU, memory or GPU".
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana import _alerting as alerting
from dashboards.grafana import _common as c
from dashboards.grafana import queries as q
from dashboards.grafana._grid import Grid

_SERVER_HTTP = (
    "Source: the model server's HTTP histogram modelwatch_serving_request_duration_seconds "
    "(job modelwatch-serving), predict route only."
)
_SIDECAR_LATENCY = (
    "Source: the sidecar's modelwatch_prediction_latency_seconds histogram, built from the "
    "latency the model server reports in each logged prediction (sampled predictions only)."
)
# The multi-window alerts' burn-rate factors (1×, 6×, 14.4× by default), lowest first.
_BURN_STEPS = tuple(zip(alerting.BURN_FACTORS, ("yellow", "orange", "red", "purple"), strict=False))
_WINDOWS = ", ".join(w.label for w in alerting.BURN_WINDOWS)


def _burn_description(what: str, budget: float) -> str:
    return (
        f"{what} over the {_WINDOWS} windows (recording rules namespace_model_version:"
        f"…:ratio_rate<window>) divided by the error budget {budget:g}. 1 spends the budget "
        "exactly over the SLO period; the ModelwatchLatencyBudgetBurn and "
        "ModelwatchErrorBudgetBurn alerts fire when a long and a short window both exceed "
        f"one of the factors drawn ({', '.join(f'{f:g}' for f in alerting.BURN_FACTORS)})."
    )


def build() -> model.Dashboard:
    """The serving dashboard."""
    grid = Grid()
    grid.row("Traffic and errors")
    grid.add(
        c.time_series(
            q.REQUEST_RATE,
            description="HTTP requests per second answered by the model server, by route and "
            "status code (modelwatch_serving_request_duration_seconds_count).",
            unit=c.REQUESTS_PER_SECOND,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.PREDICTION_RATE,
            description="Instances scored per second by the model server, by status, next to "
            "the predictions the sidecar received from the prediction logger (lower when the "
            "logger samples or drops).",
            unit=c.PER_SECOND,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.ERROR_RATIO,
            description="Share of scored instances with status error "
            "(modelwatch_serving_predictions_total), and share of predict requests answered with "
            "a 5xx status (modelwatch_serving_request_duration_seconds_count, predict route only).",
            unit=c.RATIO,
            min_value=0,
            thresholds=((alerting.ERROR_BUDGET, "red"),),
        ),
        width=8,
    )
    grid.row("Latency")
    grid.add(
        c.time_series(
            q.REQUEST_LATENCY,
            description=f"p50, p95 and p99 of the predict request latency. {_SERVER_HTTP}",
            unit=c.SECONDS,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.PREDICTION_LATENCY,
            description=f"p50, p95 and p99 of the prediction latency. {_SIDECAR_LATENCY}",
            unit=c.SECONDS,
        ),
        width=8,
    )
    grid.add(
        c.bucket_heatmap(
            q.LATENCY_HEATMAP,
            description=f"Predict requests per second in each latency bucket. {_SERVER_HTTP}",
            unit=c.SECONDS,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.BATCH_SIZE,
            description="Instances per model call (micro-batch size): p50, p95 and mean, from "
            "modelwatch_serving_batch_size. Small batches under load mean the batcher waits "
            "too little to fill them.",
            unit=c.COUNT,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.IN_FLIGHT,
            description="Requests being served now (modelwatch_serving_requests_in_flight) and "
            "requests waiting for a micro-batch (modelwatch_serving_queue_depth), per pod.",
            unit=c.COUNT,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.VERSION_LATENCY,
            description=f"p99 prediction latency of each model version side by side. "
            f"{_SIDECAR_LATENCY}",
            unit=c.SECONDS,
        ),
        width=8,
    )
    grid.add(
        c.instant_table(
            q.VERSION_COMPARISON,
            description="Each model version now: instances scored per second and error ratio "
            f"(model server), p99 prediction latency (sidecar). {_SIDECAR_LATENCY}",
            units=(c.PER_SECOND, c.RATIO, c.SECONDS),
            names=("predictions/s", "error ratio", "p99 latency"),
        ),
        width=24,
        height=6,
    )
    grid.row("SLO burn rate")
    grid.add(
        c.time_series(
            q.LATENCY_BURN,
            description=_burn_description(
                f"Share of predictions slower than {alerting.LATENCY_SLO_SECONDS:g} s",
                alerting.LATENCY_BUDGET,
            ),
            unit=c.BURN_RATE,
            thresholds=_BURN_STEPS,
            min_value=0,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.ERROR_BURN,
            description=_burn_description(
                "Share of predictions with status error", alerting.ERROR_BUDGET
            ),
            unit=c.BURN_RATE,
            thresholds=_BURN_STEPS,
            min_value=0,
        ),
        width=12,
    )
    grid.row("Resources")
    grid.add(
        c.time_series(
            q.CONTAINER_CPU,
            description="CPU cores used by the model-server and modelwatch-sidecar containers "
            "of the selected models' pods (cAdvisor container_cpu_usage_seconds_total).",
            unit=c.COUNT,
            min_value=0,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.CONTAINER_MEMORY,
            description="Working-set memory of the model-server and modelwatch-sidecar "
            "containers (cAdvisor container_memory_working_set_bytes), what the OOM killer "
            "compares with the limit.",
            unit=c.BYTES,
            min_value=0,
        ),
        width=8,
    )
    grid.add(
        c.time_series(
            q.GPU_UTILISATION,
            description="GPU utilisation of the selected models' pods from the DCGM exporter "
            "(DCGM_FI_DEV_GPU_UTIL). Empty on CPU-only deployments.",
            unit=c.PERCENT,
            min_value=0,
            max_value=100,
        ),
        width=8,
    )
    return c.dashboard(
        q.SERVING,
        "Model serving overview",
        "Traffic, errors, latency, SLO burn and resources of modelwatch-served models.",
        ("serving",),
        grid,
    )
