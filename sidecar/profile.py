"""Reference profiles: the versioned JSON description of one model version's training data.

A profile is built offline (``sidecar.profile_builder``), mounted into the sidecar and loaded here
at start-up. Loading validates every field and fails with a ``ProfileError`` that names the JSON
path of the first problem, so a bad ConfigMap is caught before the sidecar serves traffic.
The format is documented field by field in ``docs/profile.md``; keep the two in step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray

from sidecar._json import json_type
from sidecar.columns import PREDICTION_KEY
from sidecar.errors import ProfileError

FORMAT = "modelwatch.profile"
FORMAT_VERSION = 1
OTHER = "__other__"
"""Name of the bucket holding every category outside a categorical profile's top-K list."""
RESERVED_FEATURE = PREDICTION_KEY
"""Feature name the engine uses for the prediction's counters; a feature may not take it."""
MAX_CATEGORIES = 1000
"""Most categories one categorical profile may list. Each category is a bin in every window
slot and a label value of two metric series (bin total and reference ratio), so the cap bounds
both the sidecar's memory and the series one feature can mint."""

_SHARE_TOLERANCE = 1e-6

FloatArray = NDArray[np.float64]


def category_key(value: object) -> str | None:
    """The canonical string a categorical value is matched by, or None when it is missing.

    Strings are kept as they are; booleans become ``"true"``/``"false"``; integers and integral
    floats their decimal form (so ``1``, ``1.0`` and ``"1"`` are one category). Other values
    (non-integral floats, lists, objects) have no category and return None only when they are
    None; callers treat anything else as a type error.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    raise TypeError(f"{type(value).__name__} value {value!r} is not a category")


@dataclass(frozen=True, slots=True)
class QuantileMethod:
    """How the numeric edges were computed, and the worst rank error that method allows."""

    name: Literal["exact", "compactor-sketch"]
    sketch_size: int
    max_rank_error: float


@dataclass(frozen=True, slots=True, eq=False)
class NumericProfile:
    """Reference statistics of one numeric column.

    ``psi_edges`` are the inner edges of the PSI bins (bin ``i`` is ``(e[i-1], e[i]]``, the first
    and last bins are open-ended), so ``psi_shares`` has one more entry than ``psi_edges``.
    ``ks_cdf[i]`` is the reference share of values ``<= ks_edges[i]``.
    """

    name: str
    count: int
    missing: int
    min: float
    max: float
    mean: float
    std: float
    psi_edges: FloatArray
    psi_shares: FloatArray
    ks_edges: FloatArray
    ks_cdf: FloatArray
    kind: Literal["numeric"] = field(default="numeric", init=False)

    @property
    def missing_ratio(self) -> float:
        """Share of reference rows where the value was missing."""
        total = self.count + self.missing
        return self.missing / total if total else 0.0

    @property
    def ks_shares(self) -> FloatArray:
        """Reference share of each fine KS bin, ``len(ks_edges) + 1`` entries summing to 1."""
        return np.diff(np.concatenate(([0.0], self.ks_cdf, [1.0])))


@dataclass(frozen=True, slots=True, eq=False)
class CategoricalProfile:
    """Reference shares of one categorical column: its top-K categories plus ``__other__``.

    ``shares`` has ``len(categories) + 1`` entries; the last one is the ``__other__`` bucket
    (every reference value outside the top-K list). ``distinct`` counts the distinct reference
    values; when it exceeds ``len(categories)`` the list is truncated and ``complete`` is False.
    """

    name: str
    count: int
    missing: int
    categories: tuple[str, ...]
    shares: FloatArray
    distinct: int
    kind: Literal["categorical"] = field(default="categorical", init=False)

    @property
    def missing_ratio(self) -> float:
        """Share of reference rows where the value was missing."""
        total = self.count + self.missing
        return self.missing / total if total else 0.0

    @property
    def other_share(self) -> float:
        """Reference share of the ``__other__`` bucket."""
        return float(self.shares[-1])

    @property
    def complete(self) -> bool:
        """True when every reference category is listed (nothing went to ``__other__``)."""
        return self.distinct <= len(self.categories)


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True, slots=True, eq=False)
class Profile:
    """The reference profile of one model version: its features and its prediction."""

    model: str
    version: str
    rows: int
    created_at: str
    quantiles: QuantileMethod
    features: tuple[FeatureProfile, ...]
    prediction: FeatureProfile | None = None
    source: str | None = None

    def feature(self, name: str) -> FeatureProfile:
        """The profile of feature ``name``; KeyError when the model has no such feature."""
        for feat in self.features:
            if feat.name == name:
                return feat
        raise KeyError(name)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in profile order."""
        return tuple(f.name for f in self.features)


# --------------------------------------------------------------------------- serialisation


def _feature_to_json(feat: FeatureProfile) -> dict[str, Any]:
    common: dict[str, Any] = {
        "name": feat.name,
        "kind": feat.kind,
        "count": feat.count,
        "missing": feat.missing,
        "missing_ratio": feat.missing_ratio,
    }
    if isinstance(feat, NumericProfile):
        return {
            **common,
            "min": feat.min,
            "max": feat.max,
            "mean": feat.mean,
            "std": feat.std,
            "psi": {"edges": feat.psi_edges.tolist(), "shares": feat.psi_shares.tolist()},
            "ks": {"edges": feat.ks_edges.tolist(), "cdf": feat.ks_cdf.tolist()},
        }
    return {
        **common,
        "categories": dict(zip(feat.categories, feat.shares[:-1].tolist(), strict=True)),
        "other_share": feat.other_share,
        "distinct": feat.distinct,
        "complete": feat.complete,
    }


def profile_to_json(profile: Profile) -> dict[str, Any]:
    """The JSON document of ``profile`` (see ``docs/profile.md``)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": profile.model,
        "version": profile.version,
        "rows": profile.rows,
        "created_at": profile.created_at,
        "source": profile.source,
        "quantiles": {
            "method": profile.quantiles.name,
            "sketch_size": profile.quantiles.sketch_size,
            "max_rank_error": profile.quantiles.max_rank_error,
        },
        "features": [_feature_to_json(f) for f in profile.features],
        "prediction": None if profile.prediction is None else _feature_to_json(profile.prediction),
    }


def dump_profile(profile: Profile, path: Path) -> None:
    """Write ``profile`` to ``path`` as indented JSON (atomically: temp file, then rename)."""
    data = orjson.dumps(profile_to_json(profile), option=orjson.OPT_INDENT_2)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data + b"\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- validation


class _Reader:
    """Typed access to a JSON object that raises ProfileError naming the full path."""

    def __init__(self, obj: object, path: str, source: str | None) -> None:
        self.path = path
        self.source = source
        if not isinstance(obj, dict):
            raise self.error("", f"must be an object, got {json_type(obj)}")
        self.obj: dict[str, Any] = obj

    def error(self, key: str, reason: str) -> ProfileError:
        return ProfileError(self.at(key), reason, source=self.source)

    def at(self, key: str) -> str:
        if not key:
            return self.path or "(document)"
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str) -> object:
        if key not in self.obj:
            raise self.error(key, "is required")
        return self.obj[key]

    def string(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {json_type(value)}")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"must be a string or null, got {json_type(value)}")
        return value

    def count(self, key: str) -> int:
        value = self.raw(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.error(key, f"must be a non-negative integer, got {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self.raw(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(key, f"must be a number, got {json_type(value)}")
        if not math.isfinite(value):
            raise self.error(key, "must be finite")
        return float(value)

    def child(self, key: str) -> _Reader:
        return _Reader(self.raw(key), self.at(key), self.source)

    def floats(self, key: str) -> FloatArray:
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be an array of numbers, got {json_type(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, int | float) or isinstance(item, bool):
                raise self.error(f"{key}[{i}]", f"must be a number, got {json_type(item)}")
            if not math.isfinite(item):
                raise self.error(f"{key}[{i}]", "must be finite")
        return np.asarray(value, dtype=np.float64)


def _check_shares(r: _Reader, key: str, shares: FloatArray, expected_len: int) -> None:
    if len(shares) != expected_len:
        raise r.error(key, f"must have {expected_len} entries, got {len(shares)}")
    if np.any(shares < 0) or np.any(shares > 1):
        raise r.error(key, "every share must lie in [0, 1]")
    total = float(shares.sum())
    if abs(total - 1.0) > _SHARE_TOLERANCE:
        raise r.error(key, f"must sum to 1 (got {total:.9g})")


def _check_increasing(r: _Reader, key: str, edges: FloatArray) -> None:
    if len(edges) > 1 and not np.all(np.diff(edges) > 0):
        bad = int(np.argmin(np.diff(edges) > 0)) + 1
        raise r.error(f"{key}[{bad}]", "edges must be strictly increasing")


def _numeric_from_json(r: _Reader, name: str, count: int, missing: int) -> NumericProfile:
    lo, hi = r.number("min"), r.number("max")
    if count and lo > hi:
        raise r.error("min", f"must not exceed max ({lo} > {hi})")
    std = r.number("std")
    if std < 0:
        raise r.error("std", "must not be negative")
    psi = r.child("psi")
    psi_edges = psi.floats("edges")
    _check_increasing(psi, "edges", psi_edges)
    psi_shares = psi.floats("shares")
    _check_shares(psi, "shares", psi_shares, len(psi_edges) + 1)
    ks = r.child("ks")
    ks_edges = ks.floats("edges")
    _check_increasing(ks, "edges", ks_edges)
    ks_cdf = ks.floats("cdf")
    if len(ks_cdf) != len(ks_edges):
        raise ks.error("cdf", f"must have one entry per edge ({len(ks_edges)}), got {len(ks_cdf)}")
    if len(ks_cdf) and (np.any(np.diff(ks_cdf) < 0) or ks_cdf[0] < 0 or ks_cdf[-1] > 1):
        raise ks.error("cdf", "must be non-decreasing within [0, 1]")
    return NumericProfile(
        name=name,
        count=count,
        missing=missing,
        min=lo,
        max=hi,
        mean=r.number("mean"),
        std=std,
        psi_edges=psi_edges,
        psi_shares=psi_shares,
        ks_edges=ks_edges,
        ks_cdf=ks_cdf,
    )


def _categorical_from_json(r: _Reader, name: str, count: int, missing: int) -> CategoricalProfile:
    cats = r.child("categories")
    if len(cats.obj) > MAX_CATEGORIES:
        raise r.error(
            "categories",
            f"lists {len(cats.obj)} categories; at most {MAX_CATEGORIES} are allowed "
            "(rebuild the profile with a smaller --top-k)",
        )
    names: list[str] = []
    shares: list[float] = []
    for key in cats.obj:
        if key == OTHER:
            raise cats.error(key, f"{OTHER!r} is reserved; use other_share")
        names.append(key)
        shares.append(cats.number(key))
    other = r.number("other_share")
    share_array = np.asarray([*shares, other], dtype=np.float64)
    _check_shares(r, "categories", share_array, len(names) + 1)
    distinct = r.count("distinct")
    if distinct < len(names):
        raise r.error("distinct", f"must be at least the number of categories ({len(names)})")
    return CategoricalProfile(
        name=name,
        count=count,
        missing=missing,
        categories=tuple(names),
        shares=share_array,
        distinct=distinct,
    )


def _feature_from_json(obj: object, path: str, source: str | None) -> FeatureProfile:
    r = _Reader(obj, path, source)
    name = r.string("name")
    kind = r.string("kind")
    count = r.count("count")
    missing = r.count("missing")
    if kind == "numeric":
        return _numeric_from_json(r, name, count, missing)
    if kind == "categorical":
        return _categorical_from_json(r, name, count, missing)
    raise r.error("kind", f"must be 'numeric' or 'categorical', got {kind!r}")


def profile_from_json(obj: object, *, source: str | None = None) -> Profile:
    """Validate a decoded profile document and build a ``Profile``; ProfileError names the field."""
    r = _Reader(obj, "", source)
    fmt = r.string("format")
    if fmt != FORMAT:
        raise r.error("format", f"must be {FORMAT!r}, got {fmt!r}")
    version = r.raw("format_version")
    if version != FORMAT_VERSION:
        raise r.error("format_version", f"unsupported version {version!r} (this build reads 1)")
    q = r.child("quantiles")
    method = q.string("method")
    if method not in ("exact", "compactor-sketch"):
        raise q.error("method", f"must be 'exact' or 'compactor-sketch', got {method!r}")
    quantiles = QuantileMethod(
        name="exact" if method == "exact" else "compactor-sketch",
        sketch_size=q.count("sketch_size"),
        max_rank_error=q.number("max_rank_error"),
    )
    raw_features = r.raw("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise r.error("features", "must be a non-empty array")
    features = tuple(
        _feature_from_json(item, f"features[{i}]", source) for i, item in enumerate(raw_features)
    )
    seen: set[str] = set()
    for i, feat in enumerate(features):
        if feat.name == RESERVED_FEATURE:
            raise r.error(
                f"features[{i}].name",
                f"{RESERVED_FEATURE!r} is reserved for the prediction; rename the feature",
            )
        if feat.name in seen:
            raise r.error(f"features[{i}].name", f"duplicate feature name {feat.name!r}")
        seen.add(feat.name)
    raw_prediction = r.obj.get("prediction")
    prediction = (
        None if raw_prediction is None else _feature_from_json(raw_prediction, "prediction", source)
    )
    return Profile(
        model=r.string("model"),
        version=r.string("version"),
        rows=r.count("rows"),
        created_at=r.string("created_at"),
        quantiles=quantiles,
        features=features,
        prediction=prediction,
        source=r.optional_string("source"),
    )


def load_profile(path: Path) -> Profile:
    """Read and validate the profile at ``path``; ProfileError names the file and the field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError("(file)", f"cannot read: {exc.strerror}", source=str(path)) from exc
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProfileError("(document)", f"not valid JSON: {exc}", source=str(path)) from exc
    return profile_from_json(obj, source=str(path))
