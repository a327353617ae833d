"""Exact reference profiles built straight from numpy, independent of the production builder.

Tests use ``make_profile`` to get a profile whose every number is known from the raw values,
so the drift engine can be checked against scipy on the same data without trusting
``sidecar.profile_builder``. Numeric edges are exact quantiles (``inverted_cdf``), so the PSI
edges are a subset of the KS edges whenever ``ks_bins`` is a multiple of ``psi_bins``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from sidecar.profile import (
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
    QuantileMethod,
)

FloatArray = NDArray[np.float64]

PREDICTION_NAME = "prediction"
"""Name given to the prediction section of a test profile."""


def quantile_edges(values: FloatArray, bins: int) -> FloatArray:
    """Inner edges at the ``k/bins`` quantiles (k = 1..bins-1) of the present values, unique."""
    present = values[~np.isnan(values)]
    if present.size == 0 or bins < 2:
        return np.empty(0, dtype=np.float64)
    probs = np.arange(1, bins, dtype=np.float64) / bins
    edges = np.quantile(present, probs, method="inverted_cdf")
    return np.unique(np.asarray(edges, dtype=np.float64))


def bin_shares(values: FloatArray, edges: FloatArray) -> FloatArray:
    """Share of the non-missing values in each bin (``searchsorted(side="left")`` semantics)."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        shares = np.zeros(len(edges) + 1, dtype=np.float64)
        shares[0] = 1.0
        return shares
    idx = np.searchsorted(edges, present, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return counts.astype(np.float64) / present.size


def cdf_at(values: FloatArray, edges: FloatArray) -> FloatArray:
    """Share of the non-missing values ``<= e`` for each edge ``e``."""
    present = np.sort(values[~np.isnan(values)])
    if present.size == 0:
        return np.zeros(len(edges), dtype=np.float64)
    return np.searchsorted(present, edges, side="right").astype(np.float64) / present.size


def numeric_profile(name: str, values: FloatArray, psi_bins: int, ks_bins: int) -> NumericProfile:
    """The exact numeric profile of ``values`` (NaN counts as missing)."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    psi_edges = quantile_edges(values, psi_bins)
    ks_edges = quantile_edges(values, ks_bins)
    empty = present.size == 0
    return NumericProfile(
        name=name,
        count=int(present.size),
        missing=int(values.size - present.size),
        min=0.0 if empty else float(present.min()),
        max=0.0 if empty else float(present.max()),
        mean=0.0 if empty else float(present.mean()),
        std=0.0 if empty else float(present.std()),
        psi_edges=psi_edges,
        psi_shares=bin_shares(values, psi_edges),
        ks_edges=ks_edges,
        ks_cdf=cdf_at(values, ks_edges),
    )


def categorical_profile(name: str, values: Sequence[str | None], top_k: int) -> CategoricalProfile:
    """The exact categorical profile of ``values``: the ``top_k`` most frequent plus ``__other__``.

    Ties in frequency are broken by category name so the list is deterministic.
    """
    present = [v for v in values if v is not None]
    counts = Counter(present)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    categories = tuple(str(k) for k, _ in ranked)
    n = len(present)
    if n == 0:
        shares = np.zeros(len(categories) + 1, dtype=np.float64)
        shares[-1] = 1.0
    else:
        kept = np.asarray([c for _, c in ranked], dtype=np.float64)
        other = n - float(kept.sum())
        shares = np.concatenate((kept, [other])) / n
    return CategoricalProfile(
        name=name,
        count=n,
        missing=len(values) - n,
        categories=categories,
        shares=shares,
        distinct=len(counts),
    )


def make_profile(
    model: str = "m",
    version: str = "1",
    numeric: Mapping[str, FloatArray] | None = None,
    categorical: Mapping[str, Sequence[str | None]] | None = None,
    prediction: FloatArray | Sequence[str | None] | None = None,
    prediction_kind: Literal["numeric", "categorical"] = "numeric",
    psi_bins: int = 10,
    ks_bins: int = 200,
    top_k: int = 50,
) -> Profile:
    """A profile of the given raw reference columns: numeric features first, then categorical."""
    numeric = numeric or {}
    categorical = categorical or {}
    features: list[FeatureProfile] = [
        numeric_profile(name, np.asarray(col, dtype=np.float64), psi_bins, ks_bins)
        for name, col in numeric.items()
    ]
    features += [categorical_profile(name, col, top_k) for name, col in categorical.items()]
    pred: FeatureProfile | None = None
    if prediction is not None:
        if prediction_kind == "numeric":
            pred = numeric_profile(
                PREDICTION_NAME, np.asarray(prediction, dtype=np.float64), psi_bins, ks_bins
            )
        else:
            pred = categorical_profile(PREDICTION_NAME, list(prediction), top_k)
    lengths = [len(c) for c in numeric.values()] + [len(c) for c in categorical.values()]
    return Profile(
        model=model,
        version=version,
        rows=max(lengths, default=0),
        created_at="2026-01-01T00:00:00Z",
        quantiles=QuantileMethod("exact", 0, 0.0),
        features=tuple(features),
        prediction=pred,
    )
