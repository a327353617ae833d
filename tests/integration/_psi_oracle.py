"""An independent PSI oracle for the fleet recording rules: pooled raw values against a profile.

The fleet PSI is computed by Prometheus from per-pod bin counters; here the same quantity is
computed straight from the events sent (docs/statistics.md), with the tolerance that
``increase()``'s extrapolation allows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from sidecar.profile import Profile

EPSILON = 1e-4


def pooled_psi(profile: Profile, feature: str, columns: Sequence[NDArray[np.float64]]) -> float:
    """PSI of the pooled raw values against the profile (docs/statistics.md), computed here."""
    spec = next(f for f in profile.features if f.name == feature)
    edges = np.asarray(spec.psi_edges)  # type: ignore[union-attr]
    reference = np.asarray(spec.psi_shares)  # type: ignore[union-attr]
    pooled = np.concatenate(columns)
    counts = np.bincount(np.searchsorted(edges, pooled, side="left"), minlength=len(reference))
    return psi(counts / counts.sum(), reference)


def psi(current: NDArray[np.float64], reference: NDArray[np.float64]) -> float:
    """PSI of two share vectors, empty shares replaced by ``EPSILON``."""
    c = np.where(current > 0, current, EPSILON)
    r = np.where(reference > 0, reference, EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def extrapolation_tolerance(
    profile: Profile, feature: str, columns: Sequence[NDArray[np.float64]], window: float
) -> float:
    """How far the fleet PSI may sit from the pooled PSI, derived from how ``increase()`` works.

    ``increase(c[W])`` multiplies each series' sampled rise by (sampled span + extrapolated
    span) / sampled span. All series of one pod come from the same scrapes, so one factor
    ``k_p`` scales every bin of that pod alike; and because each counter's first sample in the
    window is 0 (the events arrived inside it), Prometheus extrapolates only towards the end,
    by less than 1.1 scrape intervals Δ: ``1 <= k_p < 1 + 1.1Δ / (W - 2.2Δ)`` (the sampled span
    is at least W minus an interval at each end). Shares pool the pods with weights ``k_p``, so
    the fleet share vector is the pooled one with the pods' relative weight ρ = k_1/k_0 off by at
    most that factor either way; the bound is the largest PSI change over such ρ.

    ``clamp_min(share, ε)`` differs from the sidecar's "replace empty shares by ε" only for
    shares in (0, ε): with fewer than 1/ε = 10 000 events every non-empty share is at least
    1/n > ε (checked here), and the reference shares are deciles, so the floor adds nothing.
    """
    delta = 1.0
    k_max = 1 + 1.1 * delta / (window - 2.2 * delta)
    spec = next(f for f in profile.features if f.name == feature)
    edges = np.asarray(spec.psi_edges)  # type: ignore[union-attr]
    reference = np.asarray(spec.psi_shares)  # type: ignore[union-attr]
    counts = [
        np.bincount(np.searchsorted(edges, c, side="left"), minlength=len(reference))
        for c in columns
    ]
    assert sum(len(c) for c in columns) < 1 / EPSILON
    assert reference.min() > EPSILON
    base = psi((counts[0] + counts[1]) / (len(columns[0]) + len(columns[1])), reference)
    worst = 0.0
    for rho in np.linspace(1 / k_max, k_max, 201):
        mixed = counts[0] + rho * counts[1]
        worst = max(worst, abs(psi(mixed / mixed.sum(), reference) - base))
    return worst + 1e-9
