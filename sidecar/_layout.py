"""How one model's columns map onto a single concatenated vector of bin counts.

The drift engine keeps one count vector per window slot for all of a model's columns (features
in profile order, then the prediction). This module decides, once per profile, which positions
of that vector each column owns and how its raw bins regroup into the bins the statistics use:

- a numeric column is binned once on its *augmented* edges: just below the reference minimum,
  the fine KS edges, the reference maximum (when above the last fine edge) and +inf. So one
  pass also yields the out-of-range counts (first and last finite bins) and parks NaN after
  +inf in a trailing bin that is never read, with no separate NaN filter. Bin ``j`` holds the
  values in (edge[j-1], edge[j]], the bins of ``searchsorted(edges, x, side="left")``; they are
  counted, not looked up per value: the batch's values are sorted once and the edges (and a
  final NaN, which sorts last) are searched in them, so a bin's count is the difference of two
  cumulative counts and the cost is a sort plus ~200 searches, not one search per value;
- fine KS bins and PSI bins are contiguous runs of those raw bins (PSI edges are a subset of
  the KS edges in a built profile); a hand-edited profile that breaks the subset property has
  its values counted a second time, on its PSI edges, into positions of its own;
- a categorical column owns one position per listed category, one for ``__other__`` (values
  outside the list: unseen) and one for missing values, which is never read.

Every regrouping is a pair of (start, end) positions read off a cumulative sum, so drift and
counters cost O(vector width), independent of traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from numpy.typing import NDArray

from sidecar.profile import OTHER, CategoricalProfile, FeatureProfile, NumericProfile

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
IndexArray = NDArray[np.intp]

_INF = np.array([np.inf])
_NAN = np.array([np.nan])


@dataclass(frozen=True, slots=True, eq=False)
class NumericBinner:
    """Counts one numeric column's values into its positions of the count vector.

    ``edges`` are the augmented edges (ending with +inf); ``bounds`` are the same followed by
    NaN, one per position the column owns, so searching them in the sorted values gives the
    cumulative count up to and including each bin. ``psi_*`` likewise for a profile whose PSI
    edges are not fine edges (None otherwise).
    """

    name: str
    edges: FloatArray
    offset: int
    psi_edges: FloatArray | None
    psi_offset: int
    bounds: FloatArray
    psi_bounds: FloatArray | None

    def fill(self, values: FloatArray, counts: IntArray) -> None:
        """Write the bin counts of ``values`` into the column's own positions of ``counts``.

        NaN goes into the never-read bin after +inf. Other columns' positions are untouched.
        """
        ordered = np.sort(values)
        _fill_run(ordered, self.bounds, counts, self.offset)
        if self.psi_bounds is not None:
            _fill_run(ordered, self.psi_bounds, counts, self.psi_offset)


def _fill_run(ordered: FloatArray, bounds: FloatArray, counts: IntArray, offset: int) -> None:
    # Values <= bounds[j] (NaN sorts last, so the final NaN bound covers every value) minus
    # values <= bounds[j-1] are exactly the values with searchsorted(edges, x, "left") == j.
    upto = np.searchsorted(ordered, bounds, side="right")
    counts[offset] = upto[0]
    np.subtract(upto[1:], upto[:-1], out=counts[offset + 1 : offset + len(bounds)])


def _with_nan(edges: FloatArray) -> FloatArray:
    return np.concatenate((edges, _NAN))


@dataclass(frozen=True, slots=True, eq=False)
class CategoricalBinner:
    """Bins one categorical column's keys into its positions of the count vector."""

    name: str
    lookup: dict[str | None, int]
    other: int

    def positions(self, keys: Sequence[str | None], out: list[IndexArray]) -> None:
        """Append the vector position of every key; unlisted keys go to ``__other__``."""
        found = map(self.lookup.get, keys, repeat(self.other))
        out.append(np.fromiter(found, dtype=np.intp, count=len(keys)))


Binner = NumericBinner | CategoricalBinner


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """Positions and regrouping indices of every column of one model (features, then prediction).

    ``psi_*`` index the PSI bins of all columns laid end to end (``psi_offsets[c]`` is where
    column ``c`` starts among them). ``ks_*`` cover the numeric columns that can be tested
    (``ks_columns``), ``chi_*`` the categorical ones (``chi_columns``; ``chi_bins`` picks their
    bins out of the PSI bins). ``low``/``high``/``other`` are (start, end) ranges per column,
    empty where a column has no such bin.
    """

    width: int
    binners: tuple[Binner, ...]
    columns: tuple[FeatureProfile, ...]
    psi_starts: IndexArray
    psi_ends: IndexArray
    psi_offsets: IndexArray
    psi_reference: FloatArray
    psi_labels: tuple[tuple[str, ...], ...]
    ks_columns: IndexArray
    ks_starts: IndexArray
    ks_ends: IndexArray
    ks_offsets: IndexArray
    ks_cdf: FloatArray
    ks_cdf_offsets: IndexArray
    ks_error_bounds: FloatArray
    chi_columns: IndexArray
    chi_bins: IndexArray
    chi_offsets: IndexArray
    chi_reference: FloatArray
    low: tuple[IndexArray, IndexArray]
    high: tuple[IndexArray, IndexArray]
    other: tuple[IndexArray, IndexArray]
    reference_counts: IntArray

    def regroup(self, running: IntArray, starts: IndexArray, ends: IndexArray) -> IntArray:
        """Counts of the runs [start, end) given ``running`` = cumulative sum with a leading 0."""
        return np.asarray(running[ends] - running[starts], dtype=np.int64)


class _Builder:
    """Accumulates positions while columns are laid out one after another."""

    def __init__(self) -> None:
        self.width = 0
        self.psi_starts: list[int] = []
        self.psi_ends: list[int] = []
        self.psi_offsets: list[int] = []
        self.psi_reference: list[FloatArray] = []
        self.labels: list[tuple[str, ...]] = []
        self.ks: list[tuple[int, list[int], list[int], FloatArray]] = []
        self.chi: list[tuple[int, FloatArray]] = []
        self.low: list[tuple[int, int]] = []
        self.high: list[tuple[int, int]] = []
        self.other: list[tuple[int, int]] = []

    def take(self, n: int) -> int:
        """Reserve ``n`` positions at the end of the vector; the first one's index."""
        start = self.width
        self.width += n
        return start

    def psi_bins(self, starts: list[int], ends: list[int], shares: FloatArray) -> None:
        """Record one column's PSI bins as runs [start, end) of raw positions."""
        self.psi_offsets.append(len(self.psi_starts))
        self.psi_starts += starts
        self.psi_ends += ends
        self.psi_reference.append(np.asarray(shares, dtype=np.float64))


def _augmented_edges(feat: NumericProfile) -> FloatArray:
    """Fine edges with a ``< min`` bin before them, a ``> max`` bin after them and +inf last.

    For a built profile the edges lie within [min, max]; a hand-edited one whose edges stray
    outside gets its range widened to the edges, so the bins stay ordered.
    """
    fine = feat.ks_edges
    if feat.count == 0 or fine.size == 0:
        return _INF.copy()
    low = np.nextafter(min(feat.min, float(fine[0])), -np.inf)
    high = max(feat.max, float(fine[-1]))
    parts = [np.array([low]), fine, np.array([high]) if high > fine[-1] else np.empty(0), _INF]
    return np.concatenate(parts)


def _lay_numeric(b: _Builder, column: int, feat: NumericProfile) -> NumericBinner:
    edges = _augmented_edges(feat)
    offset = b.take(len(edges) + 1)
    nan_bin = offset + len(edges)
    fine = feat.ks_edges
    tested = feat.count > 0 and fine.size > 0
    b.other.append((offset, offset))
    b.labels.append(tuple(str(i) for i in range(len(feat.psi_shares))))
    if tested:
        # Raw bin 0 is "< min", raw bin j+1 is fine bin j; the raw bin before the NaN bin holds
        # exactly the values "> max", and the last fine bin runs up to it.
        fine_starts = [offset, *range(offset + 2, offset + fine.size + 2)]
        b.ks.append((column, fine_starts, [*fine_starts[1:], nan_bin], feat.ks_cdf))
        b.low.append((offset, offset + 1))
        b.high.append((nan_bin - 1, nan_bin))
    else:
        b.low.append((offset, offset))
        b.high.append((offset, offset))
    if feat.psi_edges.size == 0 or (tested and bool(np.all(np.isin(feat.psi_edges, fine)))):
        cuts = [offset + 2 + int(k) for k in np.searchsorted(fine, feat.psi_edges)]
        b.psi_bins([offset, *cuts], [*cuts, nan_bin], feat.psi_shares)
        return NumericBinner(feat.name, edges, offset, None, 0, _with_nan(edges), None)
    psi_edges = np.concatenate((feat.psi_edges, _INF))
    psi_offset = b.take(len(psi_edges) + 1)
    bins = list(range(psi_offset, psi_offset + feat.psi_edges.size + 1))
    b.psi_bins(bins, [i + 1 for i in bins], feat.psi_shares)
    return NumericBinner(
        feat.name, edges, offset, psi_edges, psi_offset, _with_nan(edges), _with_nan(psi_edges)
    )


def _lay_categorical(b: _Builder, column: int, feat: CategoricalProfile) -> CategoricalBinner:
    k = len(feat.categories)
    offset = b.take(k + 2)
    lookup: dict[str | None, int] = {name: offset + i for i, name in enumerate(feat.categories)}
    lookup[None] = offset + k + 1
    bins = list(range(offset, offset + k + 1))
    b.psi_bins(bins, [i + 1 for i in bins], feat.shares)
    b.labels.append((*feat.categories, OTHER))
    if feat.count > 0:
        b.chi.append((column, feat.shares))
    b.low.append((offset, offset))
    b.high.append((offset, offset))
    b.other.append((offset + k, offset + k + 1))
    return CategoricalBinner(feat.name, lookup, offset + k)


def _max_share(cdf: FloatArray) -> float:
    return float(np.max(np.diff(np.concatenate(([0.0], cdf, [1.0])))))


def _ranges(pairs: list[tuple[int, int]]) -> tuple[IndexArray, IndexArray]:
    arr = np.asarray(pairs, dtype=np.intp).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


def _starts(lengths: Sequence[int]) -> IndexArray:
    """Start of each run given the runs' lengths (empty for no runs)."""
    return (np.cumsum(lengths, dtype=np.intp) - np.asarray(lengths, dtype=np.intp)).astype(np.intp)


def _concat(parts: Sequence[FloatArray]) -> FloatArray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def _indices(values: Sequence[int]) -> IndexArray:
    return np.asarray(values, dtype=np.intp)


def build_layout(columns: Sequence[FeatureProfile]) -> Layout:
    """Lay out ``columns`` (features in profile order, then the prediction if any)."""
    b = _Builder()
    binners = tuple(
        _lay_numeric(b, i, col) if isinstance(col, NumericProfile) else _lay_categorical(b, i, col)
        for i, col in enumerate(columns)
    )
    psi_offsets = _indices(b.psi_offsets)
    psi_lengths = np.diff(np.append(psi_offsets, len(b.psi_starts)))
    chi_bins = [np.arange(psi_offsets[c], psi_offsets[c] + psi_lengths[c]) for c, _ in b.chi]
    return Layout(
        width=b.width,
        binners=binners,
        columns=tuple(columns),
        psi_starts=_indices(b.psi_starts),
        psi_ends=_indices(b.psi_ends),
        psi_offsets=psi_offsets,
        psi_reference=_concat(b.psi_reference),
        psi_labels=tuple(b.labels),
        ks_columns=_indices([k[0] for k in b.ks]),
        ks_starts=_indices([s for k in b.ks for s in k[1]]),
        ks_ends=_indices([e for k in b.ks for e in k[2]]),
        ks_offsets=_starts([len(k[1]) for k in b.ks]),
        ks_cdf=_concat([k[3] for k in b.ks]),
        ks_cdf_offsets=_starts([len(k[3]) for k in b.ks]),
        ks_error_bounds=np.asarray([_max_share(k[3]) for k in b.ks], dtype=np.float64),
        chi_columns=_indices([c for c, _ in b.chi]),
        chi_bins=_indices(np.concatenate(chi_bins).tolist() if chi_bins else []),
        chi_offsets=_starts([len(c) for c in chi_bins]),
        chi_reference=_concat([shares for _, shares in b.chi]),
        low=_ranges(b.low),
        high=_ranges(b.high),
        other=_ranges(b.other),
        reference_counts=np.asarray([c.count for c in columns], dtype=np.int64),
    )
