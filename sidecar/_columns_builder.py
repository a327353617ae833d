"""Turn the kept events of one request into ``EventColumns``, typing values against the profile.

This is the innermost part of the ingest hot path: each column is gathered with ``map`` (C
loops), converted to numpy in one call, and only falls back to a per-value Python loop when a
column holds something other than plain numbers (or plain strings). A value of the wrong type
is counted in ``type_errors`` and warned about; its event is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sidecar._field_rules import short
from sidecar._ingest_types import EventWarning
from sidecar._json import json_type
from sidecar.columns import PREDICTION_KEY, STATUSES, EventColumns
from sidecar.profile import CategoricalProfile, FeatureProfile, Profile, category_key

FloatArray = NDArray[np.float64]

_NUMBER_TYPES = frozenset({int, float})


class Warnings:
    """At most ``limit`` warnings, one per distinct name; the rest are only counted.

    Columns hold the kept events only, so ``positions[k]`` maps kept event ``k`` back to the
    index the client sent, which is what a warning must point at.
    """

    def __init__(self, limit: int, positions: list[int]) -> None:
        self.limit = limit
        self.positions = positions
        self.items: list[EventWarning] = []
        self.seen: set[str] = set()
        self.dropped = 0

    def add(self, name: str, kept: int, path: str, message: str) -> None:
        """Warn once about ``name``, at kept event ``kept``, unless the limit is reached."""
        if name in self.seen:
            return
        self.seen.add(name)
        if len(self.items) < self.limit:
            index = self.positions[kept]
            self.items.append(EventWarning(index, f"events[{index}].{path}", message))
        else:
            self.dropped += 1


def _numeric_column(values: list[Any], path: str, warn: Warnings) -> tuple[FloatArray, int, int]:
    """The float64 column of ``values``, with its missing and type-error counts."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        column = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(column)
        if not bad.any():
            return column, 0, 0
        # orjson refuses non-finite literals; this keeps inf out of the bins should that change.
        column[bad] = np.nan
        first = int(np.argmax(bad))
        warn.add(path, first, path, "must be a finite number; not observed")
        return column, 0, int(bad.sum())
    out = np.empty(len(values), dtype=np.float64)
    missing = errors = 0
    for i, value in enumerate(values):
        kind = type(value)
        if kind is float or kind is int:
            number = float(value)
            if math.isfinite(number):
                out[i] = number
                continue
        out[i] = np.nan
        if value is None:
            missing += 1
        else:
            errors += 1
            warn.add(
                path,
                i,
                path,
                f"must be a finite number, got {json_type(value)}; not observed",
            )
    return out, missing, errors


def _categorical_column(
    values: list[Any], path: str, warn: Warnings
) -> tuple[list[str | None], int, int]:
    """The category keys of ``values``, with their missing and type-error counts."""
    if set(map(type, values)) == {str}:
        return values, 0, 0
    out: list[str | None] = []
    append = out.append
    missing = errors = 0
    for i, value in enumerate(values):
        try:
            key = category_key(value)
        except TypeError:
            errors += 1
            warn.add(
                path,
                i,
                path,
                f"must be a string, boolean or integer, got {json_type(value)}; not observed",
            )
            append(None)
            continue
        if key is None:
            missing += 1
        append(key)
    return out, missing, errors


def build_columns(
    profile: Profile,
    events: list[dict[str, Any]],
    ids: list[str],
    latencies: list[float],
    warn: Warnings,
) -> EventColumns:
    """The columns of the checked ``events``, one per profile feature plus the prediction."""
    features = [e["features"] for e in events]
    numeric: dict[str, FloatArray] = {}
    categorical: dict[str, Sequence[str | None]] = {}
    missing: dict[str, int] = {}
    type_errors: dict[str, int] = {}

    def column(feat: FeatureProfile, values: list[Any], path: str) -> FloatArray | list[str | None]:
        col: FloatArray | list[str | None]
        if isinstance(feat, CategoricalProfile):
            col, missing_n, errors_n = _categorical_column(values, path, warn)
        else:
            col, missing_n, errors_n = _numeric_column(values, path, warn)
        key = PREDICTION_KEY if path == "prediction" else feat.name
        missing[key] = missing_n
        type_errors[key] = errors_n
        return col

    for feat in profile.features:
        name = feat.name
        # map over dict.get runs in C: this is the innermost loop of the parser.
        values = list(map(dict.get, features, repeat(name)))
        col = column(feat, values, f"features.{short(name)}")
        if isinstance(col, list):
            categorical[name] = col
        else:
            numeric[name] = col

    prediction: FloatArray | list[str | None] | None = None
    if profile.prediction is not None:
        prediction = column(profile.prediction, [e["prediction"] for e in events], "prediction")

    known = frozenset(profile.feature_names)
    unknown = 0
    for i, feats in enumerate(features):
        if not known.issuperset(feats):
            for name in feats.keys() - known:
                unknown += 1
                warn.add(
                    f"unknown:{name}",
                    i,
                    f"features.{short(name)}",
                    f"feature {short(name)!r} is not in the profile of "
                    f"{profile.model}/{profile.version}; counted, not monitored",
                )

    status_counts = dict.fromkeys(STATUSES, 0)
    for e in events:
        status_counts[e["status"]] += 1

    return EventColumns(
        n=len(events),
        ids=ids,
        latency_seconds=np.asarray(latencies, dtype=np.float64),
        status_counts=status_counts,
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        missing=missing,
        type_errors=type_errors,
        unknown_features=unknown,
    )
