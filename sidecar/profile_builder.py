"""Build reference profiles from training data, in memory or streamed from CSV and Parquet files.

``build_profile`` reads the file twice, block by block, so memory stays bounded for files larger
than RAM. Pass 1 gathers counts, range, moments, a quantile sketch per numeric column and category
counts; the bin edges are chosen from the sketch. Pass 2 re-reads the file and counts every value
into those bins, so the stored shares and CDF are exact whatever the sketch's error: the sketch
only moves where the edges sit, never the truth of the shares. ``profile_from_arrays`` does the
same on in-memory columns, exactly. The format and the statistics are documented in
``docs/profile.md``. Nothing here runs on the serving path.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sidecar._accumulators import (
    CATEGORY_CAP,
    MIN_KS_BINS,
    BinPlan,
    CategoryStats,
    NumericStats,
    bin_plan,
    categorical_profile,
    check_feature_names,
    missing_category,
)
from sidecar._build_defaults import DEFAULT_KS_BINS, DEFAULT_PSI_BINS, DEFAULT_TOP_K
from sidecar._build_errors import ProfileBuildError, column_error
from sidecar._tabular import (
    BuildProgress,
    Column,
    Kind,
    ProgressCallback,
    category_counts,
    float_values,
    plan_columns,
    reader_for,
)
from sidecar.profile import (
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
    QuantileMethod,
    category_key,
)
from sidecar.sketch import DEFAULT_SIZE

__all__ = [
    "CATEGORY_CAP",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_KS_BINS",
    "DEFAULT_PSI_BINS",
    "DEFAULT_TOP_K",
    "MIN_KS_BINS",
    "BuildProgress",
    "Kind",
    "ProfileBuildError",
    "ProgressCallback",
    "build_profile",
    "profile_from_arrays",
]

FloatArray = NDArray[np.float64]

DEFAULT_BLOCK_SIZE = 1 << 20
"""Bytes of CSV parsed per block (type inference looks at the first block)."""
DEFAULT_BATCH_SIZE = 65_536
"""Rows per Parquet batch."""


# --------------------------------------------------------------------------- in memory


def profile_from_arrays(
    model: str,
    version: str,
    numeric: Mapping[str, FloatArray],
    categorical: Mapping[str, Sequence[object]],
    prediction: FloatArray | Sequence[object] | None = None,
    prediction_kind: Kind = "numeric",
    psi_bins: int = DEFAULT_PSI_BINS,
    ks_bins: int = DEFAULT_KS_BINS,
    top_k: int = DEFAULT_TOP_K,
    created_at: str | None = None,
) -> Profile:
    """An exact profile of in-memory columns of equal length (None, NaN or "" is missing)."""
    plan = bin_plan(psi_bins, ks_bins, top_k)
    lengths = {name: len(values) for name, values in numeric.items()}
    lengths.update((name, len(values)) for name, values in categorical.items())
    if prediction is not None:
        lengths["prediction"] = len(prediction)
    if not lengths or len(set(lengths.values())) != 1:
        raise ProfileBuildError("columns", f"need one or more columns of equal length: {lengths}")
    rows = next(iter(lengths.values()))
    if not rows:
        raise ProfileBuildError("data", "has no rows")
    if set(numeric) & set(categorical):
        both = sorted(set(numeric) & set(categorical))[0]
        raise column_error(both, "is listed as both numeric and categorical")
    check_feature_names([*numeric, *categorical])

    features: list[FeatureProfile] = [_numeric_in_memory(n, v, plan) for n, v in numeric.items()]
    features += [_categorical_in_memory(n, v, top_k) for n, v in categorical.items()]
    predicted: FeatureProfile | None = None
    if prediction is not None and prediction_kind == "numeric":
        predicted = _numeric_in_memory("prediction", np.asarray(prediction, np.float64), plan)
    elif prediction is not None:
        predicted = _categorical_in_memory("prediction", list(prediction), top_k)
    return Profile(
        model=model,
        version=version,
        rows=rows,
        created_at=created_at or _now(),
        quantiles=QuantileMethod("exact", 0, 0.0),
        features=tuple(features),
        prediction=predicted,
        source=None,
    )


def _numeric_in_memory(name: str, values: FloatArray, plan: BinPlan) -> NumericProfile:
    column = np.asarray(values, dtype=np.float64)
    # A sketch at least as large as the column never compacts, so its quantiles are exact.
    stats = NumericStats(name, max(2, len(column) + len(column) % 2))
    stats.add(column)
    stats.choose_edges(plan, None)
    stats.count_bins(column)
    return stats.profile()


def _categorical_in_memory(name: str, values: Sequence[object], top_k: int) -> CategoricalProfile:
    counts: dict[str, int] = {}
    missing = 0
    for raw in values:
        # numpy scalars (from arrays of labels) are not int/str subclasses, except float64.
        value = raw.item() if isinstance(raw, np.generic) else raw
        if missing_category(value):
            missing += 1
            continue
        try:
            key = category_key(value)
        except TypeError as exc:
            raise column_error(name, str(exc)) from exc
        assert key is not None  # noqa: S101 - only None maps to None
        counts[key] = counts.get(key, 0) + 1
    total = len(values) - missing
    if not total:
        raise column_error(name, "has no values (every value is missing)")
    return categorical_profile(name, total, missing, counts, len(counts), top_k)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- from a file


def build_profile(
    path: Path,
    *,
    model: str,
    version: str,
    categorical: Collection[str] = (),
    prediction_column: str | None = None,
    drop: Collection[str] = (),
    psi_bins: int = DEFAULT_PSI_BINS,
    ks_bins: int = DEFAULT_KS_BINS,
    top_k: int = DEFAULT_TOP_K,
    sketch_size: int = DEFAULT_SIZE,
    progress: ProgressCallback | None = None,
    created_at: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    category_cap: int = CATEGORY_CAP,
) -> Profile:
    """Stream a CSV or Parquet file twice and build its profile in bounded memory."""
    plan = bin_plan(psi_bins, ks_bins, top_k)
    if sketch_size < 2 or sketch_size % 2:
        raise ProfileBuildError("sketch_size", f"must be an even integer >= 2, got {sketch_size}")
    reader = reader_for(path, block_size, batch_size)
    columns = plan_columns(reader, set(categorical), prediction_column, set(drop))
    numeric = {c.name: NumericStats(c.name, sketch_size) for c in columns.columns if _num(c)}
    cats = {c.name: CategoryStats(c.name, category_cap) for c in columns.columns if not _num(c)}
    source = str(path)

    rows = 0
    for batch in reader.batches(columns, 1, progress):
        rows += batch.num_rows
        for name, stats in numeric.items():
            stats.add(float_values(batch.column(name)))
        for name, cat in cats.items():
            cat.add(*category_counts(batch.column(name), name, source))
    if not rows:
        raise ProfileBuildError("data", "has no rows", source=source)

    for stats in numeric.values():
        stats.choose_edges(plan, source)
    for cat in cats.values():
        cat.start_recount(source)
    recount = {name: cat for name, cat in cats.items() if cat.needs_recount}
    for batch in reader.batches(columns, 2, progress):
        for name, stats in numeric.items():
            stats.count_bins(float_values(batch.column(name)))
        for name, cat in recount.items():
            cat.recount(category_counts(batch.column(name), name, source)[0])

    def finish(column: Column) -> FeatureProfile:
        if _num(column):
            return numeric[column.name].profile()
        return cats[column.name].profile(top_k)

    return Profile(
        model=model,
        version=version,
        rows=rows,
        created_at=created_at or _now(),
        quantiles=_quantile_method(numeric.values(), sketch_size),
        features=tuple(finish(c) for c in columns.features),
        prediction=finish(columns.prediction) if columns.prediction else None,
        source=path.name,
    )


def _num(column: Column) -> bool:
    return column.kind == "numeric"


def _quantile_method(numeric: Collection[NumericStats], size: int) -> QuantileMethod:
    bound = max((stats.sketch.max_rank_error for stats in numeric), default=0.0)
    if bound == 0.0:
        return QuantileMethod("exact", size, 0.0)
    return QuantileMethod("compactor-sketch", size, bound)
