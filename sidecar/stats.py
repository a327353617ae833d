"""Drift statistics on binned counts: PSI, Kolmogorov–Smirnov, chi-square and p-value corrections.

Pure, stateless and vectorised: every function takes counts and reference shares and returns
numbers, so the engine and the tests share one implementation. The batched ``*_segments`` forms
work on several columns at once, laid end to end in one vector and cut by ``offsets`` (the start
of each column's run; runs are contiguous, non-empty and cover the vector). Formulas, constants
and their sources are in ``docs/statistics.md``; keep the two in step.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

PSI_EPS = 1e-4
"""Share standing in for an empty bin in PSI and for an empty reference category in chi-square."""

KS_EXACT_MAX_N = 2_000
"""Largest effective sample size for which the KS p-value runs scipy's finite-n distribution.

Above it the cost of that distribution grows linearly with the sample size (tens of ms per feature
at 50 000), so a shifted Kolmogorov limit is used instead; its absolute error is below
``0.15 / n`` (7e-5 at the switch), see ``docs/statistics.md``.
"""


def _offsets(offsets: ArrayLike) -> NDArray[np.intp]:
    return np.asarray(offsets, dtype=np.intp)


def _lengths(offsets: NDArray[np.intp], total: int) -> NDArray[np.intp]:
    return np.diff(np.append(offsets, total))


def _shares(counts: ArrayLike, offsets: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
    """Each column's counts divided by that column's total, and the totals (NaN shares when 0)."""
    values = np.asarray(counts, dtype=np.float64)
    totals = np.add.reduceat(values, offsets) if values.size else np.zeros(0)
    per_value = np.repeat(totals, _lengths(offsets, values.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        return values / per_value, totals


# --------------------------------------------------------------------------- PSI


def psi_segments(
    counts: ArrayLike, reference_shares: ArrayLike, offsets: ArrayLike, eps: float = PSI_EPS
) -> FloatArray:
    """PSI of each column: Σ (c − r)·ln(c / r), zero shares on either side replaced by ``eps``.

    ``counts`` are the current window's bin counts and ``reference_shares`` the reference share
    of the same bins, both laid end to end. A column with no values has PSI NaN.
    """
    starts = _offsets(offsets)
    current, totals = _shares(counts, starts)
    reference = np.asarray(reference_shares, dtype=np.float64)
    current = np.where(current == 0.0, eps, current)
    reference = np.where(reference == 0.0, eps, reference)
    terms = (current - reference) * np.log(current / reference)
    result = np.add.reduceat(terms, starts) if terms.size else np.zeros(0)
    result[totals == 0] = np.nan
    return np.asarray(result, dtype=np.float64)


def psi(current_counts: ArrayLike, reference_shares: ArrayLike, eps: float = PSI_EPS) -> float:
    """PSI of one column (see ``psi_segments``)."""
    return float(psi_segments(current_counts, reference_shares, [0], eps)[0])


# --------------------------------------------------------------------------- Kolmogorov–Smirnov


def ks_statistic_segments(
    fine_counts: ArrayLike,
    count_offsets: ArrayLike,
    reference_cdf: ArrayLike,
    cdf_offsets: ArrayLike,
) -> FloatArray:
    """KS D of each column: the largest |F_window(e) − F_reference(e)| over its fine edges.

    A column with ``m`` edges has ``m + 1`` fine-bin counts (open-ended first and last bins) and
    ``m`` reference CDF values; the window CDF at edge ``i`` is the share of counts in bins
    ``0..i``. Every column needs at least one edge. A column with no values has D NaN.
    """
    counts = np.asarray(fine_counts, dtype=np.int64)
    cdf = np.asarray(reference_cdf, dtype=np.float64)
    c_starts, f_starts = _offsets(count_offsets), _offsets(cdf_offsets)
    edges = _lengths(f_starts, cdf.size)
    if np.any(_lengths(c_starts, counts.size) != edges + 1):
        raise ValueError("each column needs exactly one more fine count than CDF entries")
    running = np.concatenate(([0], np.cumsum(counts)))
    totals = running[np.append(c_starts[1:], counts.size)] - running[c_starts]
    # Position of edge i of column f in `running`: one past its bin i.
    local = np.arange(cdf.size) - np.repeat(f_starts, edges)
    column_start = np.repeat(c_starts, edges)
    below = running[column_start + local + 1] - running[column_start]
    with np.errstate(invalid="ignore", divide="ignore"):
        window_cdf = below / np.repeat(totals, edges)
    gaps = np.abs(window_cdf - cdf)
    result = np.maximum.reduceat(gaps, f_starts) if gaps.size else np.zeros(0)
    result[totals == 0] = np.nan
    return np.asarray(result, dtype=np.float64)


def ks_statistic(window_fine_counts: ArrayLike, ref_cdf: ArrayLike) -> float:
    """KS D of one column from its fine-bin counts (see ``ks_statistic_segments``)."""
    return float(ks_statistic_segments(window_fine_counts, [0], ref_cdf, [0])[0])


def ks_error_bound(ref_cdf: ArrayLike) -> float:
    """Largest reference share of one fine bin: the bound on D_exact − D_binned (never negative)."""
    cdf = np.asarray(ref_cdf, dtype=np.float64)
    if cdf.size == 0:
        return 1.0
    return float(np.max(np.diff(np.concatenate(([0.0], cdf, [1.0])))))


def ks_pvalue(
    d: ArrayLike, n: ArrayLike, m: ArrayLike, *, exact_max_n: int = KS_EXACT_MAX_N
) -> FloatArray:
    """Asymptotic two-sample KS p-value of D for samples of ``n`` and ``m`` values (vectorised).

    The effective sample size ``en = n·m/(n+m)`` is rounded to an integer ``k`` and the p-value
    is the survival function of the one-sample two-sided KS distribution with ``k`` samples at
    ``d`` — the same distribution and rounding as ``scipy.stats.ks_2samp(method="asymp")``,
    so the two agree exactly while ``k <= exact_max_n``. Above that the Kolmogorov limit at
    ``sqrt(k)·d + 1/(6·sqrt(k))`` is used (absolute error below ``0.15 / k``). NaN where ``d``
    is NaN or either sample is empty.
    """
    d_arr, n_arr, m_arr = np.broadcast_arrays(
        np.asarray(d, dtype=np.float64),
        np.asarray(n, dtype=np.float64),
        np.asarray(m, dtype=np.float64),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.round(n_arr * m_arr / (n_arr + m_arr))
    result = np.full(d_arr.shape, np.nan, dtype=np.float64)
    usable = np.isfinite(d_arr) & (k >= 1)
    exact = usable & (k <= exact_max_n)
    if np.any(exact):
        # Imported on first use: scipy.stats costs about 45 MiB of resident memory, and a busy
        # sidecar's windows are past exact_max_n, where scipy.special alone is enough.
        from scipy import stats

        result[exact] = stats.kstwo.sf(d_arr[exact], k[exact])
    limit = usable & ~exact
    if np.any(limit):
        root = np.sqrt(k[limit])
        result[limit] = special.kolmogorov(root * d_arr[limit] + 1.0 / (6.0 * root))
    return np.clip(result, 0.0, 1.0)


# --------------------------------------------------------------------------- chi-square


def chi_square_segments(
    counts: ArrayLike, reference_shares: ArrayLike, offsets: ArrayLike, eps: float = PSI_EPS
) -> tuple[FloatArray, FloatArray]:
    """Chi-square goodness of fit of each column's counts to its reference shares.

    Expected counts are ``n·r`` with zero reference shares replaced by ``eps`` and the shares
    renormalised to sum to 1; the statistic is Σ (o − e)²/e and the p-value the chi-square
    survival function with ``k − 1`` degrees of freedom (``k`` bins). Returns (statistics,
    p-values); NaN for a column with no values or a single bin.
    """
    starts = _offsets(offsets)
    observed = np.asarray(counts, dtype=np.float64)
    reference = np.asarray(reference_shares, dtype=np.float64)
    lengths = _lengths(starts, observed.size)
    reference = np.where(reference == 0.0, eps, reference)
    reference = reference / np.repeat(np.add.reduceat(reference, starts), lengths)
    totals = np.add.reduceat(observed, starts)
    expected = np.repeat(totals, lengths) * reference
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = np.add.reduceat((observed - expected) ** 2 / expected, starts)
    dof = (lengths - 1).astype(np.float64)
    undefined = (totals == 0) | (dof < 1)
    statistic[undefined] = np.nan
    pvalue = np.asarray(special.chdtrc(np.where(undefined, 1.0, dof), statistic), np.float64)
    pvalue[undefined] = np.nan
    return np.asarray(statistic, dtype=np.float64), pvalue


def chi_square(
    counts: ArrayLike, reference_shares: ArrayLike, eps: float = PSI_EPS
) -> tuple[float, float]:
    """Chi-square statistic and p-value of one column (see ``chi_square_segments``)."""
    statistic, pvalue = chi_square_segments(counts, reference_shares, [0], eps)
    return float(statistic[0]), float(pvalue[0])


# --------------------------------------------------------------------------- multiple testing


def benjamini_hochberg(pvalues: ArrayLike) -> FloatArray:
    """Benjamini–Hochberg adjusted p-values (step-up, capped at 1); NaN entries stay NaN.

    Only the non-NaN p-values count as hypotheses, so an untested feature does not make the
    others harder to flag.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    result = np.full(p.shape, np.nan, dtype=np.float64)
    tested = np.flatnonzero(~np.isnan(p))
    count = tested.size
    if count == 0:
        return result
    order = np.argsort(p[tested], kind="stable")
    ranked = p[tested][order] * (count / np.arange(1, count + 1, dtype=np.float64))
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    result[tested[order]] = np.clip(ranked, 0.0, 1.0)
    return result


def bonferroni(pvalues: ArrayLike) -> FloatArray:
    """Bonferroni adjusted p-values ``min(1, p·k)`` over the ``k`` non-NaN p-values."""
    p = np.asarray(pvalues, dtype=np.float64)
    count = int(np.count_nonzero(~np.isnan(p)))
    return np.asarray(np.minimum(p * count, 1.0), dtype=np.float64)
