"""Numeric counting of the layout: sort-based counts equal a per-value searchsorted + bincount."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar._layout import NumericBinner, build_layout
from sidecar.profile import CategoricalProfile, NumericProfile

# Edges and reference bounds stay clear of the largest float: the layout steps just below the
# minimum with nextafter, which overflows (and warns) at -1.8e308. Values range over all floats.
_FINITE = st.floats(min_value=-1e300, max_value=1e300)
_SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324])


def _profile(
    name: str, count: int, low: float, high: float, ks: list[float], psi: list[float]
) -> NumericProfile:
    return NumericProfile(
        name=name,
        count=count,
        missing=0,
        min=low,
        max=high,
        mean=0.0,
        std=1.0,
        psi_edges=np.asarray(psi, dtype=np.float64),
        psi_shares=np.full(len(psi) + 1, 1.0 / (len(psi) + 1)),
        ks_edges=np.asarray(ks, dtype=np.float64),
        ks_cdf=np.linspace(0.0, 1.0, len(ks) + 2)[1:-1],
    )


@st.composite
def _columns(draw: st.DrawFn) -> tuple[NumericProfile, np.ndarray]:
    """A numeric profile with small random edges and a batch of values aimed at its edges."""
    ks = sorted(set(draw(st.lists(_FINITE, max_size=8))))
    pool = [*ks, *draw(st.lists(_FINITE, max_size=4))]
    low = draw(st.sampled_from(pool) | _FINITE) if pool else draw(_FINITE)
    high = draw(st.sampled_from(pool) | _FINITE) if pool else draw(_FINITE)
    low, high = min(low, high), max(low, high)
    among_fine = draw(st.booleans())
    if ks and among_fine:
        psi = sorted(draw(st.sets(st.sampled_from(ks))))  # PSI edges among the fine edges
    else:
        psi = sorted(set(draw(st.lists(_FINITE, max_size=5))))  # PSI edges of their own
    count = draw(st.sampled_from([0, 1, 1000]))
    near = [*pool, low, high, math.nextafter(low, -math.inf), math.nextafter(high, math.inf)]
    value = st.sampled_from(near) | _SPECIAL | st.floats()
    kind = draw(st.sampled_from(["mixed", "empty", "one", "all-nan"]))
    if kind == "empty":
        values: list[float] = []
    elif kind == "one":
        values = [draw(value)]
    elif kind == "all-nan":
        values = [np.nan] * draw(st.integers(1, 20))
    else:
        values = draw(st.lists(value, max_size=80))
    return _profile("x", count, low, high, ks, psi), np.asarray(values, dtype=np.float64)


def _oracle(binner: NumericBinner, values: np.ndarray, width: int) -> np.ndarray:
    """Bin every value with ``searchsorted(edges, x, side="left")`` and count the bins."""
    positions = [np.searchsorted(binner.edges, values, side="left") + binner.offset]
    if binner.psi_edges is not None:
        positions.append(np.searchsorted(binner.psi_edges, values, side="left") + binner.psi_offset)
    return np.bincount(np.concatenate(positions), minlength=width)


@settings(max_examples=600)
@given(_columns())
def test_fill_equals_searchsorted_and_bincount(column: tuple[NumericProfile, np.ndarray]) -> None:
    """Sort-based counting gives every bin the count of a per-value left searchsorted."""
    profile, values = column
    layout = build_layout([profile])
    binner = layout.binners[0]
    assert isinstance(binner, NumericBinner)
    counts = np.zeros(layout.width, dtype=np.int64)
    binner.fill(values, counts)
    np.testing.assert_array_equal(counts, _oracle(binner, values, layout.width))


def test_value_on_an_edge_counts_in_the_bin_that_ends_there() -> None:
    """Bins are (e[j-1], e[j]]: a value equal to an edge belongs to the bin below it."""
    layout = build_layout([_profile("x", 10, 0.0, 3.0, [1.0, 2.0], [])])
    binner = layout.binners[0]
    assert isinstance(binner, NumericBinner)
    counts = np.zeros(layout.width, dtype=np.int64)
    binner.fill(np.array([-1.0, 0.0, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0, np.inf, np.nan]), counts)
    # Augmented edges: just below 0, 1, 2, 3, +inf; then the NaN bin.
    np.testing.assert_array_equal(counts, [1, 3, 2, 1, 2, 1])


def test_fill_writes_only_the_columns_own_positions() -> None:
    """A column's counts land in its own run of positions; other columns' positions are kept."""
    numeric = _profile("x", 10, 0.0, 3.0, [1.0, 2.0], [0.5])
    categorical = CategoricalProfile("c", 10, 0, ("a",), np.array([0.5, 0.5]), 1)
    layout = build_layout([categorical, numeric])
    binner = layout.binners[1]
    assert isinstance(binner, NumericBinner)
    counts = np.full(layout.width, -1, dtype=np.int64)
    binner.fill(np.array([0.2, 1.5, np.nan]), counts)
    own = np.zeros(layout.width, dtype=bool)
    own[binner.offset : binner.offset + len(binner.bounds)] = True
    assert binner.psi_edges is not None
    own[binner.psi_offset : binner.psi_offset + len(binner.psi_edges) + 1] = True
    assert np.all(counts[~own] == -1)
    np.testing.assert_array_equal(
        counts[own], _oracle(binner, np.array([0.2, 1.5, np.nan]), layout.width)[own]
    )
