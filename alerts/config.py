"""The one place for the selectors, thresholds and windows of modelwatch's Prometheus rules.

Every number an alert or recording rule uses lives here; the rule modules only assemble PromQL
from a :class:`RulesConfig`. :meth:`RulesConfig.scaled` shrinks every window and ``for:``
duration for fast tests and demos, and never changes a threshold or a rule name: recording
rules are named after the production windows (:attr:`Duration.label`), whatever the scale.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

__all__ = ["DEFAULT", "BurnRate", "Duration", "RulesConfig"]

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_UNIT_SECONDS = dict(_UNITS)
_DURATION = re.compile(r"(\d+)([dhms])")


@dataclass(frozen=True)
class Duration:
    """A Prometheus duration: whole ``seconds`` plus the production spelling used in rule names."""

    seconds: int
    label: str

    @classmethod
    def of(cls, text: str) -> Duration:
        """Parse a duration such as ``"5m"`` or ``"1h30m"``; the text becomes the label."""
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration like '5m' or '1h30m': {text!r}")
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
        if seconds < 1:
            raise ValueError(f"a duration must be at least 1s: {text!r}")
        return cls(seconds=seconds, label=text)

    def scaled(self, factor: float) -> Duration:
        """The duration times ``factor``, rounded to whole seconds and never below 1s."""
        return Duration(seconds=max(1, round(self.seconds * factor)), label=self.label)

    def __str__(self) -> str:
        """The PromQL spelling of :attr:`seconds` (``"1h12m"``, ``"5s"``)."""
        rest = self.seconds
        text = ""
        for unit, size in _UNITS:
            count, rest = divmod(rest, size)
            if count:
                text += f"{count}{unit}"
        return text


@dataclass(frozen=True)
class BurnRate:
    """One multi-window burn-rate condition: both windows above ``factor`` × the error budget."""

    long_window: Duration
    short_window: Duration
    factor: float
    for_: Duration
    severity: str

    def scaled(self, factor: float) -> BurnRate:
        """The same condition with both windows and the ``for:`` duration scaled."""
        return dataclasses.replace(
            self,
            long_window=self.long_window.scaled(factor),
            short_window=self.short_window.scaled(factor),
            for_=self.for_.scaled(factor),
        )


def _burn_rates() -> tuple[BurnRate, ...]:
    d = Duration.of
    return (
        BurnRate(d("1h"), d("5m"), 14.4, d("2m"), "critical"),
        BurnRate(d("6h"), d("30m"), 6.0, d("15m"), "critical"),
        BurnRate(d("3d"), d("6h"), 1.0, d("1h"), "warning"),
    )


@dataclass(frozen=True)
class RulesConfig:
    """Selectors, thresholds and windows of every modelwatch recording rule and alert."""

    # selectors
    sidecar_selector: str = 'job="modelwatch-sidecar"'
    serving_selector: str = 'job="modelwatch-serving"'
    runbook_base_url: str = "https://github.com/modelwatch/modelwatch/blob/main/alerts/runbooks"
    evaluation_interval: Duration = Duration(60, "1m")

    # drift
    psi_window: Duration = Duration(3600, "1h")
    psi_epsilon: float = 1e-4
    psi_warning: float = 0.2
    psi_critical: float = 0.25
    prediction_psi_warning: float = 0.2
    min_window_events: int = 500
    ks_statistic_threshold: float = 0.1
    drift_for: Duration = Duration(900, "15m")

    # model quality
    accuracy_floor: float = 0.9
    min_labelled_predictions: int = 200
    accuracy_for: Duration = Duration(1800, "30m")

    # traffic, latency and errors
    traffic_window: Duration = Duration(300, "5m")
    latency_quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)
    latency_slo_seconds: float = 0.25
    latency_slo_target: float = 0.99
    error_slo_target: float = 0.999
    burn_rates: tuple[BurnRate, ...] = _burn_rates()
    no_predictions_for: Duration = Duration(900, "15m")

    # data quality
    quality_window: Duration = Duration(900, "15m")
    quality_min_events: int = 100
    missing_ratio_margin: float = 0.05
    out_of_range_ratio: float = 0.05
    type_error_ratio: float = 0.01
    quality_for: Duration = Duration(900, "15m")

    # sidecar and logger health
    health_window: Duration = Duration(300, "5m")
    sidecar_down_for: Duration = Duration(300, "5m")
    sidecar_absent_for: Duration = Duration(900, "15m")
    logger_dropping_for: Duration = Duration(600, "10m")
    events_rejected_ratio: float = 0.01
    events_rejected_for: Duration = Duration(900, "15m")
    ingest_rejected_for: Duration = Duration(900, "15m")
    shipping_for: Duration = Duration(300, "5m")
    shipping_lag_warning_seconds: float = 600.0
    shipping_lag_critical_seconds: float = 3600.0
    shipping_lag_for: Duration = Duration(600, "10m")
    collector_errors_window: Duration = Duration(900, "15m")
    collector_errors_for: Duration = Duration(300, "5m")
    watchdog_for: Duration = Duration(60, "1m")

    def scaled(self, factor: float) -> RulesConfig:
        """A copy with every window, ``for:`` and the evaluation interval multiplied by ``factor``.

        Durations are rounded to whole seconds and never go below 1s; thresholds, selectors and
        the rule names (built from :attr:`Duration.label`) stay as they are.
        """
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, got {factor!r}")
        changes: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Duration):
                changes[f.name] = value.scaled(factor)
            elif f.name == "burn_rates":
                changes[f.name] = tuple(b.scaled(factor) for b in self.burn_rates)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT = RulesConfig()
