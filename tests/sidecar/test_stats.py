"""Drift statistics checked against direct numpy formulas and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from sidecar import stats
from tests.support.profiles import cdf_at, quantile_edges


def _direct_psi(counts: np.ndarray, reference: np.ndarray, eps: float = 1e-4) -> float:
    current = counts / counts.sum()
    current = np.where(current == 0, eps, current)
    reference = np.where(reference == 0, eps, reference)
    return float(np.sum((current - reference) * np.log(current / reference)))


def _fine_counts(window: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, window, side="left"), minlength=len(edges) + 1)


# --------------------------------------------------------------------------- PSI


def test_psi_matches_direct_formula_with_empty_bins() -> None:
    """PSI equals Σ(c−r)·ln(c/r) with ε for zero shares on both sides, natural log."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        counts = rng.integers(0, 50, size=12)
        counts[rng.integers(0, 12, size=3)] = 0
        reference = rng.dirichlet(np.ones(12))
        reference[rng.integers(0, 12)] = 0.0
        assert stats.psi(counts, reference) == pytest.approx(
            _direct_psi(counts, reference), abs=1e-9
        )


def test_psi_of_identical_shares_is_zero() -> None:
    """Counts proportional to the reference shares give PSI 0."""
    assert stats.psi([10, 20, 70], [0.1, 0.2, 0.7]) == pytest.approx(0.0, abs=1e-12)


def test_psi_eps_is_applied_to_empty_current_bins() -> None:
    """An empty window bin contributes (ε − r)·ln(ε / r), so a custom ε changes the result."""
    counts, reference = np.array([0, 100]), np.array([0.5, 0.5])
    assert stats.psi(counts, reference, eps=1e-3) == pytest.approx(
        _direct_psi(counts, reference, eps=1e-3), abs=1e-12
    )
    assert stats.psi(counts, reference, eps=1e-3) != stats.psi(counts, reference)


def test_psi_segments_equal_one_column_at_a_time() -> None:
    """The batched PSI of columns laid end to end equals PSI of each column alone."""
    rng = np.random.default_rng(1)
    lengths = [3, 10, 1, 5]
    counts = [rng.integers(0, 30, size=k) for k in lengths]
    shares = [rng.dirichlet(np.ones(k)) for k in lengths]
    offsets = np.cumsum([0, *lengths[:-1]])
    batched = stats.psi_segments(np.concatenate(counts), np.concatenate(shares), offsets)
    for i in range(len(lengths)):
        assert batched[i] == pytest.approx(stats.psi(counts[i], shares[i]), abs=1e-12)


def test_psi_of_an_empty_window_is_nan() -> None:
    """With no values in the window PSI is undefined (NaN), not 0."""
    assert np.isnan(stats.psi([0, 0, 0], [0.2, 0.3, 0.5]))


# --------------------------------------------------------------------------- KS statistic


def test_ks_statistic_matches_direct_cdf_difference() -> None:
    """Binned D is the largest gap between the window's cumulative share and the reference CDF."""
    rng = np.random.default_rng(3)
    reference = rng.normal(size=4000)
    window = rng.normal(0.3, 1.2, size=700)
    edges = quantile_edges(reference, 100)
    ref_cdf = cdf_at(reference, edges)
    window_cdf = np.searchsorted(np.sort(window), edges, side="right") / window.size
    expected = np.max(np.abs(window_cdf - ref_cdf))
    assert stats.ks_statistic(_fine_counts(window, edges), ref_cdf) == pytest.approx(expected)


_values = st.lists(
    st.one_of(st.integers(-5, 5).map(float), st.floats(-10, 10, allow_nan=False)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(reference=_values, window=_values, bins=st.integers(2, 40))
def test_binned_ks_is_within_the_documented_bound_of_exact_ks(
    reference: list[float], window: list[float], bins: int
) -> None:
    """0 ≤ D_exact − D_binned ≤ the largest reference share of one fine bin, ties included."""
    ref, win = np.asarray(reference), np.asarray(window)
    edges = quantile_edges(ref, bins)
    ref_cdf = cdf_at(ref, edges)
    with np.errstate(divide="ignore"):  # scipy's p-value for one value each divides by 0
        exact = sps.ks_2samp(ref, win, method="asymp").statistic
    binned = stats.ks_statistic(_fine_counts(win, edges), ref_cdf)
    bound = stats.ks_error_bound(ref_cdf)
    assert binned <= exact + 1e-12
    assert exact <= binned + bound + 1e-12


def test_ks_statistic_segments_equal_one_column_at_a_time() -> None:
    """Batched D over columns laid end to end equals D of each column alone."""
    rng = np.random.default_rng(5)
    edges = [np.sort(rng.normal(size=k)) for k in (1, 7, 30)]
    cdfs = [np.sort(rng.uniform(size=len(e))) for e in edges]
    counts = [rng.integers(0, 20, size=len(e) + 1) for e in edges]
    batched = stats.ks_statistic_segments(
        np.concatenate(counts),
        np.cumsum([0, *[len(c) for c in counts[:-1]]]),
        np.concatenate(cdfs),
        np.cumsum([0, *[len(c) for c in cdfs[:-1]]]),
    )
    for i in range(3):
        assert batched[i] == pytest.approx(stats.ks_statistic(counts[i], cdfs[i]))


def test_ks_statistic_segments_reject_mismatched_lengths() -> None:
    """Each column must have one more fine count than CDF entries."""
    with pytest.raises(ValueError, match="one more fine count"):
        stats.ks_statistic_segments([1, 2, 3], [0], [0.5], [0])


def test_ks_error_bound_is_the_largest_fine_bin_share() -> None:
    """The bound includes the open-ended first and last bins."""
    assert stats.ks_error_bound([0.1, 0.15, 0.5]) == pytest.approx(0.5)
    assert stats.ks_error_bound([0.4, 0.5]) == pytest.approx(0.5)


# --------------------------------------------------------------------------- KS p-value


@pytest.mark.parametrize(("n", "m"), [(50, 80), (300, 1000), (2500, 4000), (1900, 90_000)])
def test_ks_pvalue_equals_scipy_asymptotic_for_the_same_d(n: int, m: int) -> None:
    """Up to the exact-size limit, the p-value is scipy's ks_2samp(method="asymp") one."""
    rng = np.random.default_rng(n)
    for shift in (0.0, 0.05, 0.2, 0.6):
        a, b = rng.normal(size=m), rng.normal(shift, 1, size=n)
        result = sps.ks_2samp(a, b, method="asymp")
        ours = stats.ks_pvalue(result.statistic, n, m)
        assert float(ours) == pytest.approx(result.pvalue, rel=1e-12, abs=1e-300)
        assert float(stats.ks_pvalue(result.statistic, m, n)) == float(ours)


def test_ks_pvalue_is_vectorised() -> None:
    """Arrays of D, n and m give one p-value each, equal to the scalar calls."""
    d = np.array([0.01, 0.05, 0.2])
    n = np.array([100, 500, 40])
    m = np.array([1000, 800, 40])
    batched = stats.ks_pvalue(d, n, m)
    assert batched.shape == (3,)
    for i in range(3):
        assert batched[i] == float(stats.ks_pvalue(d[i], n[i], m[i]))


@pytest.mark.parametrize("k", [2001, 5000, 40_000])
def test_ks_pvalue_beyond_exact_limit_stays_close_to_scipy(k: int) -> None:
    """Past the exact-size limit the shifted Kolmogorov limit is within 0.15/k of scipy's value."""
    d = np.linspace(0.05, 6.0, 60) / np.sqrt(k)
    ours = stats.ks_pvalue(d, 2 * k, 2 * k)  # en = k exactly
    exact = sps.kstwo.sf(d, k)
    assert np.max(np.abs(ours - exact)) < 0.15 / k


def test_ks_pvalue_is_nan_without_samples_or_statistic() -> None:
    """An empty sample or a NaN statistic has no p-value."""
    out = stats.ks_pvalue([0.1, np.nan, 0.1], [0, 100, 100], [100, 100, 0])
    assert np.all(np.isnan(out))


# --------------------------------------------------------------------------- chi-square


def test_chi_square_equals_scipy_chisquare() -> None:
    """Statistic and p-value equal scipy.stats.chisquare with ε-smoothed, renormalised shares."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        observed = rng.integers(0, 40, size=6)
        reference = rng.dirichlet(np.ones(6))
        reference[rng.integers(0, 6)] = 0.0
        smoothed = np.where(reference == 0, 1e-4, reference)
        smoothed /= smoothed.sum()
        expected = sps.chisquare(observed, observed.sum() * smoothed)
        statistic, pvalue = stats.chi_square(observed, reference)
        assert statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_chi_square_segments_equal_one_column_at_a_time() -> None:
    """Batched chi-square equals each column alone."""
    counts = [np.array([5, 9, 0]), np.array([30, 2]), np.array([1, 1, 1, 7])]
    shares = [np.array([0.3, 0.7, 0.0]), np.array([0.5, 0.5]), np.array([0.25] * 4)]
    stat, p = stats.chi_square_segments(np.concatenate(counts), np.concatenate(shares), [0, 3, 5])
    for i in range(3):
        s1, p1 = stats.chi_square(counts[i], shares[i])
        assert stat[i] == pytest.approx(s1)
        assert p[i] == pytest.approx(p1)


def test_chi_square_is_nan_for_empty_window_or_single_bin() -> None:
    """No values, or one bin (zero degrees of freedom), leaves the test undefined."""
    assert all(np.isnan(stats.chi_square([0, 0], [0.5, 0.5])))
    assert all(np.isnan(stats.chi_square([10], [1.0])))


# --------------------------------------------------------------------------- corrections


def test_benjamini_hochberg_equals_scipy() -> None:
    """BH adjusted p-values equal scipy.stats.false_discovery_control (unsorted input, ties)."""
    rng = np.random.default_rng(2)
    for size in (1, 2, 5, 30):
        p = rng.uniform(size=size) ** 3
        if size > 2:
            p[1] = p[0]
        expected = sps.false_discovery_control(p)
        assert np.allclose(stats.benjamini_hochberg(p), expected, rtol=1e-14, atol=0)


def test_benjamini_hochberg_ignores_nan_entries() -> None:
    """NaN p-values stay NaN and do not count as hypotheses for the others."""
    p = np.array([0.01, np.nan, 0.04, np.nan, 0.03])
    adjusted = stats.benjamini_hochberg(p)
    assert np.isnan(adjusted[[1, 3]]).all()
    assert np.allclose(adjusted[[0, 2, 4]], sps.false_discovery_control(p[[0, 2, 4]]))


def test_benjamini_hochberg_of_all_nan_is_all_nan() -> None:
    """With nothing tested there is nothing to adjust."""
    assert np.isnan(stats.benjamini_hochberg([np.nan, np.nan])).all()


def test_bonferroni_multiplies_by_tested_count_and_caps_at_one() -> None:
    """Bonferroni is min(1, p·k) with k the number of non-NaN p-values."""
    adjusted = stats.bonferroni([0.01, np.nan, 0.3, 0.02])
    assert np.allclose(adjusted[[0, 2, 3]], [0.03, 0.9, 0.06])
    assert np.isnan(adjusted[1])
    assert stats.bonferroni([0.5, 0.6])[1] == 1.0
