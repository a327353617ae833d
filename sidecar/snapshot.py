"""Read-only views of a model monitor's state: drift statistics and cumulative counters.

The drift engine produces these; the Prometheus collector, the ``/v1/drift`` endpoint, the
demo and the benchmarks only read them. Plain frozen dataclasses, safe to hand across threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """Drift of one feature (or of the prediction) over the current window.

    ``test`` is ``"ks"`` for numeric columns (``statistic`` is the KS D, ``error_bound`` the
    documented bound of its error against the exact two-sample D) and ``"chi2"`` for categorical
    ones (``statistic`` is the chi-square statistic, ``error_bound`` is 0). ``pvalue_adjusted`` is
    after the multiple-testing correction across the model's features; ``drifted`` is
    ``pvalue_adjusted < alpha``. With fewer than the minimum number of window values the
    statistics are NaN and ``drifted`` is False.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    window_values: int
    psi: float
    test: Literal["ks", "chi2"]
    statistic: float
    pvalue: float
    pvalue_adjusted: float
    drifted: bool
    error_bound: float


@dataclass(frozen=True, slots=True)
class DriftSnapshot:
    """Every drift statistic of one model version at one instant."""

    model: str
    version: str
    computed_at: float
    window_seconds: float
    window_events: int
    correction: Literal["benjamini-hochberg", "bonferroni"]
    alpha: float
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None


@dataclass(frozen=True, slots=True, eq=False)
class FeatureCounters:
    """Cumulative (since start) counters of one feature, for Prometheus counters.

    ``bins`` are the PSI bin labels (``"0"``..``"9"`` for numeric features, category names and
    ``"__other__"`` for categorical ones); ``bin_totals[i]`` counts values that fell in bin ``i``
    and ``reference_ratios[i]`` is the reference share of that bin.
    """

    feature: str
    bins: tuple[str, ...]
    bin_totals: NDArray[np.int64]
    reference_ratios: NDArray[np.float64]
    missing: int
    type_errors: int
    out_of_range: int
    unseen: int


@dataclass(frozen=True, slots=True, eq=False)
class MonitorCounters:
    """Cumulative counters of one model version since the sidecar started.

    ``latency_bucket_counts[i]`` counts events with latency ``<= latency_buckets[i]``
    (cumulative, Prometheus ``le`` semantics; the last bucket is +Inf).
    """

    model: str
    version: str
    predictions: dict[str, int]
    latency_buckets: tuple[float, ...]
    latency_bucket_counts: NDArray[np.int64]
    latency_sum: float
    latency_count: int
    unknown_features: int
    features: tuple[FeatureCounters, ...]
    prediction: FeatureCounters | None
