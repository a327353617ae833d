"""The demo's live view: what the model server's ``/metrics`` and the sidecar's ``/v1/drift`` say.

``Observer`` turns successive scrapes into ``Tick`` values: request rate and latency quantiles
over the last few seconds from the model server's request-duration histogram (bucket deltas,
interpolated as Prometheus' ``histogram_quantile`` does), the top features by PSI and by KS,
which features the sidecar flags, the prediction logger's outcomes, and the alerts Alertmanager
holds (``parse_alertmanager``; ``parse_fired`` reads the run's alerts back from Prometheus'
``ALERTS`` series for the summary). ``LiveView`` prints
them: a block redrawn in place on a terminal, one line per tick otherwise (a CI log, a pipe).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

REQUEST_HISTOGRAM = "modelwatch_serving_request_duration_seconds"
LOGGER_EVENTS = "modelwatch_logger_events_total"
LOGGER_BUFFER = "modelwatch_logger_buffer_events"
PREDICT_ROUTE_SUFFIX = ":predict"
QUANTILES = (0.5, 0.95, 0.99)
LATENCY_SPAN = 5
"""Scrapes the latency quantiles look back over (about 5 s at one scrape a second)."""
TOP = 3
WATCHDOG = "Watchdog"
"""Always firing by design (the dead man's switch); left out of the live view."""


@dataclass(frozen=True, slots=True)
class ServerScrape:
    """The parts of one model server scrape the view uses (cumulative values)."""

    at: float
    requests: float
    buckets: tuple[tuple[float, float], ...]
    logger: Mapping[str, float]
    buffered: float | None


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's statistics in the sidecar's window."""

    name: str
    psi: float | None
    ks: float | None
    """The KS statistic D (numeric features only; categorical ones are tested by chi-square)."""
    drifted: bool


@dataclass(frozen=True, slots=True, order=True)
class AlertView:
    """One alert as the view names it: alertname, what it is about, severity."""

    name: str
    subject: str
    """The ``feature`` label, else the ``pod``, else the ``model``; empty when none applies."""
    severity: str

    def __str__(self) -> str:
        about = f"{self.subject}, " if self.subject else ""
        return f"{self.name}({about}{self.severity})"


@dataclass(frozen=True, slots=True)
class Tick:
    """One refresh of the view."""

    phase: str
    elapsed: float
    rate: float
    latency: Mapping[float, float]
    window_events: int
    top_psi: tuple[FeatureDrift, ...]
    top_ks: tuple[FeatureDrift, ...]
    drifted: tuple[str, ...]
    prediction_psi: float | None
    logger: Mapping[str, float]
    buffered: float | None
    client_errors: int
    alerts: tuple[AlertView, ...] | None = None
    """Alerts Alertmanager would notify now (Watchdog left out); None without alerting."""


def parse_server(text: str, at: float) -> ServerScrape:
    """Pick the predict route's histogram and the logger's series out of an exposition."""
    buckets: dict[float, float] = {}
    requests = 0.0
    logger: dict[str, float] = {}
    buffered: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.startswith(REQUEST_HISTOGRAM) and not labels.get("route", "").endswith(
                PREDICT_ROUTE_SUFFIX
            ):
                continue
            if sample.name == REQUEST_HISTOGRAM + "_bucket":
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == REQUEST_HISTOGRAM + "_count":
                requests += sample.value
            elif sample.name == LOGGER_EVENTS and "outcome" in labels:
                logger[labels["outcome"]] = logger.get(labels["outcome"], 0.0) + sample.value
            elif sample.name == LOGGER_BUFFER:
                buffered = sample.value
    return ServerScrape(at, requests, tuple(sorted(buckets.items())), logger, buffered)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(le, count)`` buckets, linear within a bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower  # the +Inf bucket has no width: report its lower bound
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = le, count
    return lower


def alert_view(labels: Mapping[str, str]) -> AlertView:
    """The view of one alert's labels."""
    subject = labels.get("feature") or labels.get("pod") or labels.get("model") or ""
    return AlertView(labels.get("alertname", "?"), subject, labels.get("severity", "none"))


def parse_alertmanager(body: Any) -> tuple[AlertView, ...]:
    """Alerts from Alertmanager's ``GET /api/v2/alerts`` answer, sorted, Watchdog left out."""
    alerts = body if isinstance(body, list) else []
    views = {alert_view(a.get("labels", {})) for a in alerts if isinstance(a, dict)}
    return tuple(sorted(v for v in views if v.name != WATCHDOG))


def parse_fired(body: Any) -> list[AlertView]:
    """Alerts from a Prometheus query answer over the ``ALERTS`` series, sorted, each once."""
    result = body.get("data", {}).get("result", []) if isinstance(body, dict) else []
    return sorted({alert_view(s.get("metric", {})) for s in result if isinstance(s, dict)})


def parse_drift(body: Any) -> tuple[int, list[FeatureDrift], float | None]:
    """Window size, per-feature statistics and prediction PSI from a ``/v1/drift`` answer."""
    models = body.get("models", []) if isinstance(body, dict) else []
    if not models:
        return 0, [], None
    snapshot = models[0]
    features = [
        FeatureDrift(
            str(f["feature"]),
            _number(f.get("psi")),
            _number(f.get("statistic")) if f.get("test") == "ks" else None,
            bool(f.get("drifted")),
        )
        for f in snapshot.get("features", [])
    ]
    prediction = snapshot.get("prediction") or {}
    return int(snapshot.get("window_events", 0)), features, _number(prediction.get("psi"))


class Observer:
    """Keeps the last few scrapes and turns the newest one into a ``Tick``."""

    def __init__(self) -> None:
        self._scrapes: deque[ServerScrape] = deque(maxlen=LATENCY_SPAN + 1)

    def tick(
        self,
        phase: str,
        elapsed: float,
        scrape: ServerScrape,
        drift_body: Any,
        client_errors: int = 0,
        alerts: tuple[AlertView, ...] | None = None,
    ) -> Tick:
        """The view after ``scrape`` and a ``/v1/drift`` answer."""
        self._scrapes.append(scrape)
        previous = self._scrapes[-2] if len(self._scrapes) > 1 else None
        if previous is not None and scrape.at > previous.at:
            rate = (scrape.requests - previous.requests) / (scrape.at - previous.at)
        else:  # the first scrape: the counter started at zero with the server
            rate = scrape.requests / elapsed if elapsed > 0 else 0.0
        oldest = self._scrapes[0]
        recent = _bucket_deltas(oldest.buckets, scrape.buckets) if previous else scrape.buckets
        latency = {q: v for q in QUANTILES if (v := histogram_quantile(q, recent)) is not None}
        window, features, prediction_psi = parse_drift(drift_body)
        by_psi = sorted((f for f in features if f.psi is not None), key=lambda f: -(f.psi or 0))
        by_ks = sorted((f for f in features if f.ks is not None), key=lambda f: -(f.ks or 0))
        return Tick(
            phase=phase,
            elapsed=elapsed,
            rate=rate,
            latency=latency,
            window_events=window,
            top_psi=tuple(by_psi[:TOP]),
            top_ks=tuple(by_ks[:TOP]),
            drifted=tuple(f.name for f in features if f.drifted),
            prediction_psi=prediction_psi,
            logger=dict(scrape.logger),
            buffered=scrape.buffered,
            client_errors=client_errors,
            alerts=alerts,
        )


class LiveView:
    """Prints ticks: redrawn in place on a terminal, appended one line each otherwise."""

    def __init__(self, stream: TextIO, *, interactive: bool) -> None:
        self._stream = stream
        self._interactive = interactive
        self._drawn = 0

    def show(self, tick: Tick) -> None:
        """Print one tick."""
        if not self._interactive:
            self._stream.write(render_line(tick) + "\n")
            self._stream.flush()
            return
        lines = render_block(tick)
        # Move to the start of the previous block and clear to the end of the screen.
        prefix = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self._stream.write(prefix + "\n".join(lines) + "\n")
        self._stream.flush()
        self._drawn = len(lines)

    def release(self) -> None:
        """Keep the last block on screen; the next output starts below it."""
        self._drawn = 0


def render_block(tick: Tick) -> list[str]:
    """The terminal view of one tick."""
    flagged = ", ".join(tick.drifted) if tick.drifted else "none"
    return [
        f"── {tick.phase} · {tick.elapsed:5.1f} s " + "─" * 40,
        f"  requests/s {tick.rate:7.1f}   latency {_latency(tick.latency)}"
        f"   4xx seen by client {tick.client_errors}",
        f"  drift window {tick.window_events} events   prediction PSI {_fmt(tick.prediction_psi)}",
        f"  top PSI: {_features(tick.top_psi, 'psi')}",
        f"  top KS:  {_features(tick.top_ks, 'ks')}",
        f"  drift detected: {'YES' if tick.drifted else 'no'} ({flagged})",
        f"  logger: {logger_outcomes(tick)}",
        *([] if tick.alerts is None else [f"  alerts firing: {_alerts(tick.alerts)}"]),
    ]


def render_line(tick: Tick) -> str:
    """One line per tick, for output that is not a terminal."""
    psi = tick.top_psi[0] if tick.top_psi else None
    ks = tick.top_ks[0] if tick.top_ks else None
    psi_text = f"{psi.name} {_fmt(psi.psi)}" if psi else "–"
    ks_text = f"{ks.name} {_fmt(ks.ks)}" if ks else "–"
    return (
        f"[{tick.phase} {tick.elapsed:5.1f}s] {tick.rate:6.1f} req/s "
        f"{_latency(tick.latency)} | window {tick.window_events} | top PSI {psi_text} | "
        f"top KS {ks_text} | "
        f"drift {'YES ' + ','.join(tick.drifted) if tick.drifted else 'no'} | "
        f"{logger_outcomes(tick)}"
        + ("" if tick.alerts is None else f" | alerts {_alerts(tick.alerts)}")
    )


def _alerts(alerts: Sequence[AlertView], most: int = 4) -> str:
    if not alerts:
        return "none"
    shown = ", ".join(str(a) for a in alerts[:most])
    return shown + (f" +{len(alerts) - most} more" if len(alerts) > most else "")


def _bucket_deltas(
    old: Sequence[tuple[float, float]], new: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    before = dict(old)
    return [(le, count - before.get(le, 0.0)) for le, count in new]


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _latency(latency: Mapping[float, float]) -> str:
    if not latency:
        return "p50/p95/p99 –"
    parts = "/".join(f"{latency[q] * 1e3:.1f}" if q in latency else "–" for q in QUANTILES)
    return f"p50/p95/p99 {parts} ms"


def _features(features: Sequence[FeatureDrift], stat: str) -> str:
    if not features:
        return "– (too few events in the window)"
    return "  ".join(
        f"{f.name} {_fmt(f.psi if stat == 'psi' else f.ks)}{'*' if f.drifted else ''}"
        for f in features
    )


def logger_outcomes(tick: Tick) -> str:
    """The prediction logger's outcomes at ``tick``, and what it still held in its buffer."""
    counts = tick.logger
    text = " ".join(
        f"{outcome} {int(counts.get(outcome, 0))}" for outcome in ("sent", "dropped", "rejected")
    )
    if tick.buffered is not None:
        text += f" buffered {int(tick.buffered)}"
    return text
