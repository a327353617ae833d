"""Per-column state of a profile build: pass-1 statistics, bin edges, pass-2 exact bin counts.

Everything here works on numpy arrays and plain category counts; reading and converting Arrow
data is ``sidecar._tabular``'s job. Pass 1 gathers counts, range, moments, a quantile sketch per
numeric column and category counts; the bin edges are chosen from the sketch. Pass 2 counts every
value into those bins, so the stored shares and CDF are exact whatever the sketch's error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from sidecar._build_errors import ProfileBuildError, column_error
from sidecar.profile import (
    MAX_CATEGORIES,
    OTHER,
    RESERVED_FEATURE,
    CategoricalProfile,
    NumericProfile,
)
from sidecar.sketch import QuantileSketch

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

MIN_KS_BINS = 100
CATEGORY_CAP = 100_000
"""Distinct categories counted exactly per column; beyond it a Misra–Gries summary of this size."""


# --------------------------------------------------------------------------- bins


@dataclass(frozen=True, slots=True)
class BinPlan:
    psi_bins: int
    ks_bins: int

    @property
    def probs(self) -> FloatArray:
        """Probabilities of the KS edges, k / ks_bins for k = 1 .. ks_bins - 1."""
        return np.arange(1, self.ks_bins, dtype=np.float64) / self.ks_bins

    @property
    def psi_positions(self) -> IntArray:
        """Indices into ``probs`` of the PSI probabilities: PSI edges are a subset of KS edges."""
        step = self.ks_bins // self.psi_bins
        return np.arange(1, self.psi_bins, dtype=np.int64) * step - 1


def bin_plan(psi_bins: int, ks_bins: int, top_k: int) -> BinPlan:
    if psi_bins < 2:
        raise ProfileBuildError("psi_bins", f"must be at least 2, got {psi_bins}")
    if ks_bins < MIN_KS_BINS:
        raise ProfileBuildError("ks_bins", f"must be at least {MIN_KS_BINS}, got {ks_bins}")
    if ks_bins % psi_bins:
        raise ProfileBuildError(
            "ks_bins", f"must be a multiple of psi_bins ({psi_bins}), got {ks_bins}"
        )
    if not 1 <= top_k <= MAX_CATEGORIES:
        # The loader refuses profiles with more categories; better to fail before the build.
        raise ProfileBuildError("top_k", f"must be between 1 and {MAX_CATEGORIES}, got {top_k}")
    return BinPlan(psi_bins, ks_bins)


def check_feature_names(names: Iterable[str], source: str | None = None) -> None:
    """Refuse a feature column whose name the sidecar keeps for the prediction's counters."""
    for name in names:
        if name == RESERVED_FEATURE:
            raise column_error(
                name,
                f"{RESERVED_FEATURE!r} is reserved for the prediction; rename the column, "
                "drop it, or pass it as the prediction column",
                source,
            )


def _edges(
    quantile: Callable[[FloatArray], FloatArray], plan: BinPlan
) -> tuple[FloatArray, FloatArray]:
    """PSI and KS inner edges from one quantile function, duplicates removed."""
    at = quantile(plan.probs)
    return np.unique(at[plan.psi_positions]), np.unique(at)


def _fine_counts(values: FloatArray, ks_edges: FloatArray) -> IntArray:
    """Count finite ``values`` into the KS bins ``(-inf, e0], (e0, e1], …, (e_last, +inf)``."""
    index = np.searchsorted(ks_edges, values, side="left")
    return np.bincount(index, minlength=len(ks_edges) + 1).astype(np.int64)


# --------------------------------------------------------------------------- numeric


class NumericStats:
    """Count, missing, range, mean/variance (chunk-merged) and a quantile sketch of one column."""

    def __init__(self, name: str, sketch_size: int) -> None:
        self.name = name
        self.count = 0
        self.missing = 0
        self.min = np.inf
        self.max = -np.inf
        self.mean = 0.0
        self._m2 = 0.0
        self.sketch = QuantileSketch(sketch_size)
        self.edges: tuple[FloatArray, FloatArray] | None = None
        self.fine: IntArray | None = None

    def add(self, values: FloatArray) -> None:
        finite = values[np.isfinite(values)]
        self.missing += len(values) - len(finite)
        if not len(finite):
            return
        n_b = len(finite)
        mean_b = float(finite.mean())
        m2_b = float(np.square(finite - mean_b).sum())
        # Chan et al.'s pairwise merge: stable where a running sum of squares would cancel.
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self._m2 += m2_b + delta * delta * self.count * n_b / n
        self.count = n
        self.min = min(self.min, float(finite.min()))
        self.max = max(self.max, float(finite.max()))
        self.sketch.update(finite)

    def choose_edges(self, plan: BinPlan, source: str | None) -> None:
        if not self.count:
            raise column_error(self.name, "has no values (every value is missing)", source)
        self.edges = _edges(self.sketch.quantiles, plan)
        self.fine = np.zeros(len(self.edges[1]) + 1, dtype=np.int64)

    def count_bins(self, values: FloatArray) -> None:
        assert self.edges is not None  # noqa: S101 - pass 1 chose the edges
        assert self.fine is not None  # noqa: S101 - allocated with the edges
        self.fine += _fine_counts(values[np.isfinite(values)], self.edges[1])

    def profile(self) -> NumericProfile:
        assert self.edges is not None  # noqa: S101 - pass 1 chose the edges
        assert self.fine is not None  # noqa: S101 - allocated with the edges
        psi_edges, ks_edges = self.edges
        counted = int(self.fine.sum())
        if counted != self.count:
            raise column_error(self.name, "changed between the two passes over the file")
        below = np.cumsum(self.fine)[:-1]
        psi_below = below[np.searchsorted(ks_edges, psi_edges)]
        psi_counts = np.diff(np.concatenate(([0], psi_below, [counted])))
        return NumericProfile(
            name=self.name,
            count=self.count,
            missing=self.missing,
            min=self.min,
            max=self.max,
            mean=self.mean,
            std=float(np.sqrt(self._m2 / self.count)),
            psi_edges=psi_edges,
            psi_shares=psi_counts / counted,
            ks_edges=ks_edges,
            ks_cdf=below / counted,
        )


# --------------------------------------------------------------------------- categorical


@dataclass
class CategoryStats:
    """Category counts of one column: exact up to ``cap`` distinct values, Misra–Gries beyond.

    The summary under-counts each category by at most ``n / (cap + 1)``, so every category with a
    larger share survives as a candidate; pass 2 then counts the candidates exactly.
    """

    name: str
    cap: int = CATEGORY_CAP
    count: int = 0
    missing: int = 0
    distinct: int = 0
    exact: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    recounted: dict[str, int] | None = field(default=None, init=False)

    def add(self, chunk: Mapping[str, int], missing: int) -> None:
        self.missing += missing
        counts = self.counts
        for key, n in chunk.items():
            counts[key] = counts.get(key, 0) + n
            self.count += n
        # In summary mode every key still held or just added is a distinct value: a lower bound.
        self.distinct = max(self.distinct, len(counts))
        if len(counts) > self.cap:
            self.exact = False
            held = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
            cut = int(np.partition(held, len(held) - self.cap - 1)[len(held) - self.cap - 1])
            self.counts = {key: n - cut for key, n in counts.items() if n > cut}

    def start_recount(self, source: str | None) -> None:
        if not self.count:
            raise column_error(self.name, "has no values (every value is missing)", source)
        if not self.exact:
            self.recounted = dict.fromkeys(self.counts, 0)

    @property
    def needs_recount(self) -> bool:
        return self.recounted is not None

    def recount(self, chunk: Mapping[str, int]) -> None:
        assert self.recounted is not None  # noqa: S101 - pass order
        recount = self.recounted
        for key, n in chunk.items():
            if key in recount:
                recount[key] += n

    def profile(self, top_k: int) -> CategoricalProfile:
        counts = self.counts if self.recounted is None else self.recounted
        return categorical_profile(
            self.name, self.count, self.missing, counts, self.distinct, top_k
        )


def categorical_profile(
    name: str, count: int, missing: int, counts: Mapping[str, int], distinct: int, top_k: int
) -> CategoricalProfile:
    # The reserved bucket name can occur in real data; such values belong to the rest.
    ranked = sorted(
        ((key, n) for key, n in counts.items() if key != OTHER and n > 0),
        key=lambda item: (-item[1], item[0]),
    )[:top_k]
    kept = np.asarray([n for _, n in ranked], dtype=np.int64)
    shares = np.append(kept, count - int(kept.sum())) / count
    return CategoricalProfile(
        name=name,
        count=count,
        missing=missing,
        categories=tuple(key for key, _ in ranked),
        shares=shares,
        distinct=max(distinct, len(ranked)),
    )


def missing_category(value: object) -> bool:
    """None, NaN and the empty string: CSV writers use all three for a missing label."""
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))
