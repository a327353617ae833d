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

import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from sidecar.errors import ProfileError
from sidecar.profile import (
    OTHER,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
    QuantileMethod,
    category_key,
)
from sidecar.sketch import DEFAULT_SIZE, QuantileSketch

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Kind = Literal["numeric", "categorical"]

DEFAULT_PSI_BINS = 10
DEFAULT_KS_BINS = 200
MIN_KS_BINS = 100
DEFAULT_TOP_K = 50
CATEGORY_CAP = 100_000
"""Distinct categories counted exactly per column; beyond it a Misra–Gries summary of this size."""
DEFAULT_BLOCK_SIZE = 1 << 20
"""Bytes of CSV parsed per block (type inference looks at the first block)."""
DEFAULT_BATCH_SIZE = 65_536
"""Rows per Parquet batch."""

_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_COLUMN = re.compile(r"CSV column #(\d+)")


class ProfileBuildError(ProfileError, ValueError):
    """The training data or a build option is unusable; ``column`` names the column when one is."""

    def __init__(
        self, field: str, reason: str, *, source: str | None = None, column: str | None = None
    ) -> None:
        super().__init__(field, reason, source=source)
        self.column = column


def _column_error(column: str, reason: str, source: str | None = None) -> ProfileBuildError:
    return ProfileBuildError(f"column {column!r}", reason, source=source, column=column)


@dataclass(frozen=True, slots=True)
class BuildProgress:
    """How far one pass over the file has got: ``done`` of ``total`` bytes (CSV) or rows."""

    phase: Literal[1, 2]
    done: int
    total: int
    unit: Literal["bytes", "rows"]


ProgressCallback = Callable[[BuildProgress], None]


# --------------------------------------------------------------------------- bins


@dataclass(frozen=True, slots=True)
class _BinPlan:
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


def _bin_plan(psi_bins: int, ks_bins: int, top_k: int) -> _BinPlan:
    if psi_bins < 2:
        raise ProfileBuildError("psi_bins", f"must be at least 2, got {psi_bins}")
    if ks_bins < MIN_KS_BINS:
        raise ProfileBuildError("ks_bins", f"must be at least {MIN_KS_BINS}, got {ks_bins}")
    if ks_bins % psi_bins:
        raise ProfileBuildError(
            "ks_bins", f"must be a multiple of psi_bins ({psi_bins}), got {ks_bins}"
        )
    if top_k < 1:
        raise ProfileBuildError("top_k", f"must be at least 1, got {top_k}")
    return _BinPlan(psi_bins, ks_bins)


def _edges(
    quantile: Callable[[FloatArray], FloatArray], plan: _BinPlan
) -> tuple[FloatArray, FloatArray]:
    """PSI and KS inner edges from one quantile function, duplicates removed."""
    at = quantile(plan.probs)
    return np.unique(at[plan.psi_positions]), np.unique(at)


def _fine_counts(values: FloatArray, ks_edges: FloatArray) -> IntArray:
    """Count finite ``values`` into the KS bins ``(-inf, e0], (e0, e1], …, (e_last, +inf)``."""
    index = np.searchsorted(ks_edges, values, side="left")
    return np.bincount(index, minlength=len(ks_edges) + 1).astype(np.int64)


# --------------------------------------------------------------------------- accumulators


class _NumericStats:
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

    def choose_edges(self, plan: _BinPlan, source: str | None) -> None:
        if not self.count:
            raise _column_error(self.name, "has no values (every value is missing)", source)
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
            raise _column_error(self.name, "changed between the two passes over the file")
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


@dataclass
class _CategoryStats:
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
            raise _column_error(self.name, "has no values (every value is missing)", source)
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
        return _categorical_profile(
            self.name, self.count, self.missing, counts, self.distinct, top_k
        )


def _categorical_profile(
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
    plan = _bin_plan(psi_bins, ks_bins, top_k)
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
        raise _column_error(both, "is listed as both numeric and categorical")

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


def _numeric_in_memory(name: str, values: FloatArray, plan: _BinPlan) -> NumericProfile:
    column = np.asarray(values, dtype=np.float64)
    # A sketch at least as large as the column never compacts, so its quantiles are exact.
    stats = _NumericStats(name, max(2, len(column) + len(column) % 2))
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
        if _missing_category(value):
            missing += 1
            continue
        try:
            key = category_key(value)
        except TypeError as exc:
            raise _column_error(name, str(exc)) from exc
        assert key is not None  # noqa: S101 - only None maps to None
        counts[key] = counts.get(key, 0) + 1
    total = len(values) - missing
    if not total:
        raise _column_error(name, "has no values (every value is missing)")
    return _categorical_profile(name, total, missing, counts, len(counts), top_k)


def _missing_category(value: object) -> bool:
    """None, NaN and the empty string: CSV writers use all three for a missing label."""
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- from a file


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to read: the features in file order, the prediction, and how to convert CSV text."""

    features: tuple[_Column, ...]
    prediction: _Column | None
    all_names: tuple[str, ...]
    csv_types: Mapping[str, pa.DataType]

    @property
    def columns(self) -> list[_Column]:
        return [*self.features, *([self.prediction] if self.prediction else [])]


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
    plan = _bin_plan(psi_bins, ks_bins, top_k)
    if sketch_size < 2 or sketch_size % 2:
        raise ProfileBuildError("sketch_size", f"must be an even integer >= 2, got {sketch_size}")
    reader = _reader_for(path, block_size, batch_size)
    columns = _plan_columns(reader, set(categorical), prediction_column, set(drop))
    numeric = {c.name: _NumericStats(c.name, sketch_size) for c in columns.columns if _num(c)}
    cats = {c.name: _CategoryStats(c.name, category_cap) for c in columns.columns if not _num(c)}
    source = str(path)

    rows = 0
    for batch in reader.batches(columns, 1, progress):
        rows += batch.num_rows
        for name, stats in numeric.items():
            stats.add(_float_values(batch.column(name)))
        for name, cat in cats.items():
            cat.add(*_category_counts(batch.column(name), name, source))
    if not rows:
        raise ProfileBuildError("data", "has no rows", source=source)

    for stats in numeric.values():
        stats.choose_edges(plan, source)
    for cat in cats.values():
        cat.start_recount(source)
    recount = {name: cat for name, cat in cats.items() if cat.needs_recount}
    for batch in reader.batches(columns, 2, progress):
        for name, stats in numeric.items():
            stats.count_bins(_float_values(batch.column(name)))
        for name, cat in recount.items():
            cat.recount(_category_counts(batch.column(name), name, source)[0])

    def finish(column: _Column) -> FeatureProfile:
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


def _num(column: _Column) -> bool:
    return column.kind == "numeric"


def _quantile_method(numeric: Collection[_NumericStats], size: int) -> QuantileMethod:
    bound = max((stats.sketch.max_rank_error for stats in numeric), default=0.0)
    if bound == 0.0:
        return QuantileMethod("exact", size, 0.0)
    return QuantileMethod("compactor-sketch", size, bound)


def _plan_columns(
    reader: _Reader, categorical: set[str], prediction: str | None, drop: set[str]
) -> _Plan:
    schema = reader.schema
    names = tuple(schema.names)
    source = str(reader.path)
    duplicated = sorted(n for n, times in Counter(names).items() if times > 1)
    if duplicated:
        raise _column_error(duplicated[0], "appears more than once in the header", source)
    listed = [(c, "categorical") for c in sorted(categorical)] + [(c, "drop") for c in sorted(drop)]
    if prediction is not None:
        listed.append((prediction, "prediction column"))
    for column, option in listed:
        if column not in names:
            raise _column_error(column, f"is named as {option} but is not in the file", source)
    used = categorical | ({prediction} if prediction is not None else set())
    clash = sorted(drop & used)
    if clash:
        raise _column_error(clash[0], "is dropped and also used", source)

    kinds: dict[str, Kind] = {}
    csv_types: dict[str, pa.DataType] = {}
    for arrow_field in schema:
        name, dtype = arrow_field.name, arrow_field.type
        if name in drop:
            continue
        if name in categorical:
            kinds[name] = "categorical"
            if not _category_type(dtype):
                csv_types[name] = pa.string()
        elif _numeric_type(dtype):
            kinds[name] = "numeric"
            # Later blocks may hold floats or nulls where the first held integers or nothing.
            csv_types[name] = pa.float64()
        elif _category_type(dtype):
            kinds[name] = "categorical"
        else:
            raise _column_error(
                name,
                f"has type {dtype}, neither numeric nor categorical; list it in "
                "categorical or drop",
                source,
            )
    features = tuple(_Column(n, kinds[n]) for n in names if n in kinds and n != prediction)
    if not features:
        raise ProfileBuildError("columns", "no feature columns left to profile", source=source)
    predicted = _Column(prediction, kinds[prediction]) if prediction is not None else None
    return _Plan(features, predicted, names, csv_types)


def _numeric_type(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_null(dtype)
    )


def _category_type(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        return _category_type(dtype.value_type)
    return bool(
        pa.types.is_boolean(dtype)
        or pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def _float_values(column: pa.Array) -> FloatArray:
    """The column as float64 with NaN where it was null."""
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _category_counts(column: pa.Array, name: str, source: str | None) -> tuple[dict[str, int], int]:
    """Counts of each canonical category key in one chunk, and the number of missing values."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_decimal(column.type):
        column = pc.cast(column, pa.float64())
    elif not _category_type(column.type):
        column = pc.cast(column, pa.string())
    distinct = pc.value_counts(column)
    missing = column.null_count
    counts: dict[str, int] = {}
    for value, n in zip(
        distinct.field("values").to_pylist(), distinct.field("counts").to_pylist(), strict=True
    ):
        if value is None:
            continue  # counted by null_count
        if _missing_category(value):
            missing += n
            continue
        try:
            key = category_key(value)
        except TypeError as exc:
            raise _column_error(name, str(exc), source) from exc
        assert key is not None  # noqa: S101 - only None maps to None
        counts[key] = counts.get(key, 0) + n
    return counts, missing


# --------------------------------------------------------------------------- readers


class _Reader(Protocol):
    """Block-wise access to one data file; pyarrow errors become ProfileBuildError here."""

    @property
    def path(self) -> Path: ...

    @property
    def schema(self) -> pa.Schema: ...

    def batches(
        self, plan: _Plan, phase: Literal[1, 2], progress: ProgressCallback | None
    ) -> Iterator[pa.RecordBatch]: ...


def _translate(exc: Exception, path: Path, names: Sequence[str] = ()) -> ProfileBuildError:
    """A pyarrow error as a ProfileBuildError, naming the CSV column when pyarrow gives one."""
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    match = _CSV_COLUMN.search(message)
    if match and int(match.group(1)) < len(names):
        return _column_error(names[int(match.group(1))], message, str(path))
    return ProfileBuildError("data", message, source=str(path))


@dataclass(frozen=True, slots=True)
class _CsvReader:
    path: Path
    block_size: int

    def _open(self, plan: _Plan | None) -> tuple[pa.NativeFile, pa_csv.CSVStreamingReader]:
        convert = pa_csv.ConvertOptions(strings_can_be_null=True)
        if plan is not None:
            convert = pa_csv.ConvertOptions(
                strings_can_be_null=True,
                include_columns=[c.name for c in plan.columns],
                column_types=dict(plan.csv_types),
            )
        handle = pa.OSFile(str(self.path), "r")
        try:
            stream = pa_csv.open_csv(
                handle,
                read_options=pa_csv.ReadOptions(block_size=self.block_size),
                convert_options=convert,
            )
        except (pa.ArrowException, OSError) as exc:
            handle.close()
            raise _translate(exc, self.path, plan.all_names if plan else ()) from exc
        return handle, stream

    @property
    def schema(self) -> pa.Schema:
        handle, stream = self._open(None)
        with handle:
            return stream.schema

    def batches(
        self, plan: _Plan, phase: Literal[1, 2], progress: ProgressCallback | None
    ) -> Iterator[pa.RecordBatch]:
        total = self.path.stat().st_size
        handle, stream = self._open(plan)
        with handle:
            while True:
                try:
                    batch = stream.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:
                    raise _translate(exc, self.path, plan.all_names) from exc
                if progress is not None:
                    # The reader reads ahead, so the position may run a block early.
                    progress(BuildProgress(phase, min(handle.tell(), total), total, "bytes"))
                yield batch
        if progress is not None:
            progress(BuildProgress(phase, total, total, "bytes"))


@dataclass(frozen=True, slots=True)
class _ParquetReader:
    path: Path
    batch_size: int

    def _file(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise _translate(exc, self.path) from exc

    @property
    def schema(self) -> pa.Schema:
        return self._file().schema_arrow

    def batches(
        self, plan: _Plan, phase: Literal[1, 2], progress: ProgressCallback | None
    ) -> Iterator[pa.RecordBatch]:
        parquet = self._file()
        total = parquet.metadata.num_rows
        done = 0
        names = [c.name for c in plan.columns]
        try:
            for batch in parquet.iter_batches(batch_size=self.batch_size, columns=names):
                done += batch.num_rows
                if progress is not None:
                    progress(BuildProgress(phase, done, total, "rows"))
                yield batch
        except (pa.ArrowException, OSError) as exc:
            raise _translate(exc, self.path) from exc


def _reader_for(path: Path, block_size: int, batch_size: int) -> _Reader:
    source = str(path)
    if not path.is_file():
        raise ProfileBuildError("data", "no such file", source=source)
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return _CsvReader(path, block_size)
    if suffix in _PARQUET_SUFFIXES:
        return _ParquetReader(path, batch_size)
    supported = ", ".join((*_CSV_SUFFIXES, *_PARQUET_SUFFIXES))
    raise ProfileBuildError(
        "data",
        f"unsupported file type {suffix or '(none)'!r}; use one of {supported}",
        source=source,
    )
