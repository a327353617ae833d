"""Request decoding: a KServe V1 ``{"instances": [...]}`` body to model inputs, or a precise 4xx.

Rows are objects keyed by feature name or lists in the metadata's feature order. Every row is
checked before anything reaches the batcher: a body that is not JSON, the wrong shape, a missing
or unknown feature, a value of the wrong type, a null where the feature is not nullable, or more
rows than ``max_instances`` is refused with ``RequestError`` naming the first bad field
(``instances[3].mean_radius: expected a number, got string``). Client input never becomes a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from serving.errors import RequestError
from serving.metadata import FeatureSpec, ModelMetadata
from serving.model import NUMPY_DTYPES
from sidecar._json import json_type

_TOP_LEVEL_KEYS = frozenset({"instances"})


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """A valid request: the rows as feature dicts (for the prediction log) and the model inputs."""

    features: list[dict[str, Any]]
    inputs: dict[str, NDArray[Any]]

    @property
    def count(self) -> int:
        """How many instances the request holds."""
        return len(self.features)


Checker = Callable[[object], object]


class InstanceDecoder:
    """Decodes and validates predict bodies for one model; built once, shared by every request."""

    def __init__(self, metadata: ModelMetadata, *, max_instances: int) -> None:
        self.max_instances = max_instances
        self._names = metadata.feature_names
        self._name_set = frozenset(self._names)
        self._checkers: list[Checker] = [_checker(spec) for spec in metadata.features]
        positions = {name: i for i, name in enumerate(self._names)}
        self._groups: list[tuple[str, list[int], Any]] = [
            (name, [positions[s.name] for s in specs], NUMPY_DTYPES[specs[0].dtype])
            for name, specs in metadata.inputs().items()
        ]
        self._order = ", ".join(self._names)

    def decode(self, body: bytes) -> DecodedRequest:
        """Validate ``body``; raise ``RequestError`` (400, 413 or 422) naming the bad field."""
        rows = self._instances(body)
        features: list[dict[str, Any]] = []
        matrix: list[list[object]] = []
        for index, row in enumerate(rows):
            values, as_dict = self._row(index, row)
            features.append(as_dict)
            matrix.append(values)
        return DecodedRequest(features, self._columns(matrix))

    def _instances(self, body: bytes) -> list[object]:
        if not body:
            raise RequestError(400, "invalid_json", "", "the body is empty; send JSON")
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(
                400, "invalid_json", "", f"the body is not valid JSON: {exc}"
            ) from None
        if not isinstance(obj, dict):
            raise RequestError(
                400, "invalid_body", "", f"the body must be a JSON object, got {json_type(obj)}"
            )
        unknown = sorted(set(obj) - _TOP_LEVEL_KEYS)
        if unknown:
            raise RequestError(
                400, "unknown_field", unknown[0], "unknown top-level field; expected 'instances'"
            )
        if "instances" not in obj:
            raise RequestError(400, "missing_field", "instances", "is required")
        rows = obj["instances"]
        if not isinstance(rows, list):
            raise RequestError(
                422, "invalid_type", "instances", f"must be an array, got {json_type(rows)}"
            )
        if not rows:
            raise RequestError(422, "invalid_value", "instances", "must hold at least one instance")
        if len(rows) > self.max_instances:
            raise RequestError(
                413,
                "too_many_instances",
                "instances",
                f"holds {len(rows)} instances; at most {self.max_instances} per request",
            )
        return rows

    def _row(self, index: int, row: object) -> tuple[list[object], dict[str, Any]]:
        if isinstance(row, dict):
            if len(row) != len(self._names) or not self._name_set.issuperset(row):
                self._explain_keys(index, row)
            raw = [row[name] for name in self._names]
            as_dict: dict[str, Any] = row
        elif isinstance(row, list):
            if len(row) != len(self._names):
                raise RequestError(
                    422,
                    "wrong_shape",
                    f"instances[{index}]",
                    f"expected a list of {len(self._names)} values (features in order: "
                    f"{self._order}), got {len(row)}",
                )
            raw = row
            as_dict = dict(zip(self._names, row, strict=True))
        else:
            raise RequestError(
                422,
                "wrong_shape",
                f"instances[{index}]",
                "expected an object keyed by feature name or a list of values, "
                f"got {json_type(row)}",
            )
        values: list[object] = []
        for name, check, value in zip(self._names, self._checkers, raw, strict=True):
            try:
                values.append(check(value))
            except _BadValueError as bad:
                raise RequestError(
                    422, bad.reason, f"instances[{index}].{name}", str(bad)
                ) from None
        return values, as_dict

    def _explain_keys(self, index: int, row: dict[str, Any]) -> None:
        unknown = [key for key in row if key not in self._name_set]
        if unknown:
            raise RequestError(
                422,
                "unknown_feature",
                f"instances[{index}].{unknown[0]}",
                f"unknown feature; the model takes {self._order}",
            )
        missing = next(name for name in self._names if name not in row)
        raise RequestError(422, "missing_feature", f"instances[{index}].{missing}", "is missing")

    def _columns(self, matrix: list[list[object]]) -> dict[str, NDArray[Any]]:
        everything = list(range(len(self._names)))
        out: dict[str, NDArray[Any]] = {}
        for name, positions, dtype in self._groups:
            if positions == everything:
                out[name] = np.array(matrix, dtype=dtype)
            else:
                out[name] = np.array([[row[p] for p in positions] for row in matrix], dtype=dtype)
        return out


class _BadValueError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


_FLOAT_LIMITS = {
    "float32": float(np.finfo(np.float32).max),
    "float64": float(np.finfo(np.float64).max),
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _checker(spec: FeatureSpec) -> Checker:
    if spec.dtype == "string":
        return _string
    if spec.dtype == "int64":
        return _integer
    return _number(_FLOAT_LIMITS[spec.dtype], spec.dtype, nullable=spec.nullable)


def _number(limit: float, dtype: str, *, nullable: bool) -> Checker:
    nan = float("nan")

    def check(value: object) -> object:
        kind = type(value)
        if kind is float or kind is int:
            if -limit <= value <= limit:  # type: ignore[operator]
                return value
            raise _BadValueError("out_of_range", f"{value!r} does not fit in {dtype}")
        if value is None:
            if nullable:
                return nan
            raise _BadValueError("null_value", "expected a number, got null (not nullable)")
        raise _BadValueError("invalid_type", f"expected a number, got {json_type(value)}")

    return check


def _integer(value: object) -> object:
    kind = type(value)
    if kind is float and value.is_integer():  # type: ignore[attr-defined]
        value = int(value)  # type: ignore[call-overload]
        kind = int
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            return value
        raise _BadValueError("out_of_range", f"{value!r} does not fit in int64")
    if value is None:
        raise _BadValueError("null_value", "expected an integer, got null")
    raise _BadValueError("invalid_type", f"expected an integer, got {json_type(value)}")


def _string(value: object) -> object:
    if type(value) is str:
        return value
    if value is None:
        raise _BadValueError("null_value", "expected a string, got null")
    raise _BadValueError("invalid_type", f"expected a string, got {json_type(value)}")
