"""The alert rules' numbers that the panels draw, read from ``alerts.config.DEFAULT``.

Burn-rate windows and factors, SLO budgets and thresholds come from the same configuration as
the Prometheus rules, so a threshold line on a panel is where the alert fires.
"""

from __future__ import annotations

from typing import Final

from alerts.config import DEFAULT

__all__ = [
    "ACCURACY_FLOOR",
    "BURN_FACTORS",
    "BURN_WINDOWS",
    "ERROR_BUDGET",
    "KS_THRESHOLD",
    "LATENCY_BUDGET",
    "LATENCY_SLO_SECONDS",
    "MIN_LABELLED",
    "OUT_OF_RANGE_RATIO",
    "PSI_CRITICAL",
    "PSI_WARNING",
    "SHIPPING_LAG_CRITICAL",
    "SHIPPING_LAG_WARNING",
    "TYPE_ERROR_RATIO",
]


def _budget(target: float) -> float:
    # 1 - 0.99 is 0.010000000000000009 in binary floating point; the rules print it with %g.
    return round(1.0 - target, 12)


LATENCY_BUDGET: Final = _budget(DEFAULT.latency_slo_target)
ERROR_BUDGET: Final = _budget(DEFAULT.error_slo_target)
LATENCY_SLO_SECONDS: Final = DEFAULT.latency_slo_seconds
BURN_WINDOWS: Final = tuple(
    sorted(
        {w for b in DEFAULT.burn_rates for w in (b.long_window, b.short_window)},
        key=lambda w: w.seconds,
    )
)
"""The recording rules' windows (``ratio_rate<label>``), shortest first."""
BURN_FACTORS: Final = tuple(sorted({b.factor for b in DEFAULT.burn_rates}))
PSI_WARNING: Final = DEFAULT.psi_warning
PSI_CRITICAL: Final = DEFAULT.psi_critical
KS_THRESHOLD: Final = DEFAULT.ks_statistic_threshold
ACCURACY_FLOOR: Final = DEFAULT.accuracy_floor
MIN_LABELLED: Final = DEFAULT.min_labelled_predictions
OUT_OF_RANGE_RATIO: Final = DEFAULT.out_of_range_ratio
TYPE_ERROR_RATIO: Final = DEFAULT.type_error_ratio
SHIPPING_LAG_WARNING: Final = DEFAULT.shipping_lag_warning_seconds
SHIPPING_LAG_CRITICAL: Final = DEFAULT.shipping_lag_critical_seconds
