"""Streaming access to CSV and Parquet training data: column typing, block readers, conversion.

Files are read block by block (pyarrow.csv's streaming reader, Parquet record batches), so memory
stays bounded for files larger than RAM. pyarrow errors from opening or reading a file become
``ProfileBuildError`` here, naming the CSV column when pyarrow gives one. Arrow columns leave this
module as float64 arrays or category counts, the inputs of ``sidecar._accumulators``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from sidecar._accumulators import check_feature_names, missing_category
from sidecar._build_errors import ProfileBuildError, column_error
from sidecar.profile import category_key

FloatArray = NDArray[np.float64]
Kind = Literal["numeric", "categorical"]

_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_COLUMN = re.compile(r"CSV column #(\d+)")


@dataclass(frozen=True, slots=True)
class BuildProgress:
    """How far one pass over the file has got: ``done`` of ``total`` bytes (CSV) or rows."""

    phase: Literal[1, 2]
    done: int
    total: int
    unit: Literal["bytes", "rows"]


ProgressCallback = Callable[[BuildProgress], None]


# --------------------------------------------------------------------------- column typing


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """What to read: the features in file order, the prediction, and how to convert CSV text."""

    features: tuple[Column, ...]
    prediction: Column | None
    all_names: tuple[str, ...]
    csv_types: Mapping[str, pa.DataType]

    @property
    def columns(self) -> list[Column]:
        return [*self.features, *([self.prediction] if self.prediction else [])]


def plan_columns(
    reader: Reader, categorical: set[str], prediction: str | None, drop: set[str]
) -> ColumnPlan:
    schema = reader.schema
    names = tuple(schema.names)
    source = str(reader.path)
    duplicated = sorted(n for n, times in Counter(names).items() if times > 1)
    if duplicated:
        raise column_error(duplicated[0], "appears more than once in the header", source)
    listed = [(c, "categorical") for c in sorted(categorical)] + [(c, "drop") for c in sorted(drop)]
    if prediction is not None:
        listed.append((prediction, "prediction column"))
    for column, option in listed:
        if column not in names:
            raise column_error(column, f"is named as {option} but is not in the file", source)
    used = categorical | ({prediction} if prediction is not None else set())
    clash = sorted(drop & used)
    if clash:
        raise column_error(clash[0], "is dropped and also used", source)

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
            raise column_error(
                name,
                f"has type {dtype}, neither numeric nor categorical; list it in "
                "categorical or drop",
                source,
            )
    features = tuple(Column(n, kinds[n]) for n in names if n in kinds and n != prediction)
    check_feature_names((c.name for c in features), source)
    if not features:
        raise ProfileBuildError("columns", "no feature columns left to profile", source=source)
    predicted = Column(prediction, kinds[prediction]) if prediction is not None else None
    return ColumnPlan(features, predicted, names, csv_types)


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


def float_values(column: pa.Array) -> FloatArray:
    """The column as float64 with NaN where it was null."""
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def category_counts(column: pa.Array, name: str, source: str | None) -> tuple[dict[str, int], int]:
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
        if missing_category(value):
            missing += n
            continue
        try:
            key = category_key(value)
        except TypeError as exc:
            raise column_error(name, str(exc), source) from exc
        assert key is not None  # noqa: S101 - only None maps to None
        counts[key] = counts.get(key, 0) + n
    return counts, missing


# --------------------------------------------------------------------------- readers


class Reader(Protocol):
    """Block-wise access to one data file; pyarrow errors become ProfileBuildError here."""

    @property
    def path(self) -> Path: ...

    @property
    def schema(self) -> pa.Schema: ...

    def batches(
        self, plan: ColumnPlan, phase: Literal[1, 2], progress: ProgressCallback | None
    ) -> Iterator[pa.RecordBatch]: ...


def _translate(exc: Exception, path: Path, names: Sequence[str] = ()) -> ProfileBuildError:
    """A pyarrow error as a ProfileBuildError, naming the CSV column when pyarrow gives one."""
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    match = _CSV_COLUMN.search(message)
    if match and int(match.group(1)) < len(names):
        return column_error(names[int(match.group(1))], message, str(path))
    return ProfileBuildError("data", message, source=str(path))


@dataclass(frozen=True, slots=True)
class _CsvReader:
    path: Path
    block_size: int

    def _open(self, plan: ColumnPlan | None) -> tuple[pa.NativeFile, pa_csv.CSVStreamingReader]:
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
        self, plan: ColumnPlan, phase: Literal[1, 2], progress: ProgressCallback | None
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
        self, plan: ColumnPlan, phase: Literal[1, 2], progress: ProgressCallback | None
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


def reader_for(path: Path, block_size: int, batch_size: int) -> Reader:
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
