"""The benchmark setting: seeded reference and window data, its profile, batches and wire bodies.

Every benchmark measures the same model: 30 numeric features (a mix of normal, lognormal and
uniform columns), a numeric prediction, a 50 000-row reference, batches of 500 events. The data
is generated from fixed seeds so two runs measure the same work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import orjson
from numpy.typing import NDArray

from sidecar.columns import PREDICTION_KEY, EventColumns
from sidecar.profile import Profile
from sidecar.profile_builder import profile_from_arrays

FloatArray = NDArray[np.float64]

FEATURES = 30
REFERENCE_ROWS = 50_000
BATCH_EVENTS = 500
MODEL = "bench"
VERSION = "1"
TIMESTAMP = "2026-11-25T09:00:00.123Z"
"""Timestamp written in every wire event (the engine windows by arrival time)."""

_REFERENCE_SEED = 20_261_125
_WINDOW_SEED = 7


def feature_names() -> tuple[str, ...]:
    """The 30 feature names, ``f00`` … ``f29``."""
    return tuple(f"f{i:02d}" for i in range(FEATURES))


def _column(rng: np.random.Generator, index: int, n: int, shift: float) -> FloatArray:
    # Three shapes so the quantile edges are not all alike: symmetric, skewed, bounded.
    kind = index % 3
    if kind == 0:
        return rng.normal(loc=10.0 * index + shift, scale=1.0 + index / 10.0, size=n)
    if kind == 1:
        return rng.lognormal(mean=0.5 + shift / 4.0, sigma=0.75, size=n)
    return rng.uniform(low=-index + shift, high=index + 1.0 + shift, size=n)


@dataclass(frozen=True, slots=True, eq=False)
class Columns:
    """Raw values of every feature and of the prediction, ``n`` rows each."""

    features: Mapping[str, FloatArray]
    prediction: FloatArray

    @property
    def n(self) -> int:
        """Number of rows."""
        return len(self.prediction)


def reference_columns(rows: int = REFERENCE_ROWS) -> Columns:
    """The reference data set the profile is built from."""
    return _columns(np.random.default_rng(_REFERENCE_SEED), rows, drifted=())


def window_columns(rows: int, *, seed: int = _WINDOW_SEED) -> Columns:
    """Serving-time data: the reference distributions, with every fifth feature shifted."""
    drifted = tuple(range(0, FEATURES, 5))
    return _columns(np.random.default_rng(seed), rows, drifted=drifted)


def _columns(rng: np.random.Generator, rows: int, drifted: tuple[int, ...]) -> Columns:
    features = {
        name: _column(rng, i, rows, shift=0.5 if i in drifted else 0.0)
        for i, name in enumerate(feature_names())
    }
    prediction = rng.beta(2.0, 5.0, size=rows)
    return Columns(features=features, prediction=prediction)


def build_profile(reference: Columns) -> tuple[Profile, str]:
    """The production profile of ``reference`` and the name of the builder that made it."""
    profile = profile_from_arrays(
        MODEL,
        VERSION,
        numeric=dict(reference.features),
        categorical={},
        prediction=reference.prediction,
    )
    return profile, "sidecar.profile_builder.profile_from_arrays"


def event_batches(
    data: Columns, batch: int = BATCH_EVENTS, *, tag: str = "b"
) -> list[EventColumns]:
    """``data`` cut into EventColumns batches of ``batch`` events, as the parser would hand them."""
    names = [*data.features, PREDICTION_KEY]
    zeros = dict.fromkeys(names, 0)
    rng = np.random.default_rng(_WINDOW_SEED + 1)
    latencies = rng.gamma(2.0, 0.004, size=data.n)
    batches: list[EventColumns] = []
    for b, start in enumerate(range(0, data.n - batch + 1, batch)):
        stop = start + batch
        batches.append(
            EventColumns(
                n=batch,
                ids=[f"{tag}{b}-{i}" for i in range(batch)],
                latency_seconds=np.ascontiguousarray(latencies[start:stop]),
                status_counts={"ok": batch, "error": 0},
                numeric={k: np.ascontiguousarray(v[start:stop]) for k, v in data.features.items()},
                categorical={},
                prediction=np.ascontiguousarray(data.prediction[start:stop]),
                missing=zeros,
                type_errors=zeros,
            )
        )
    return batches


def event_bodies(data: Columns, batch: int = BATCH_EVENTS) -> list[bytes]:
    """``data`` as ``POST /v1/events`` JSON bodies of ``batch`` events each, serialised once.

    Ids are unique within a body (and across the bodies of one call).
    """
    rng = np.random.default_rng(_WINDOW_SEED + 2)
    latencies = rng.gamma(2.0, 0.004, size=data.n).tolist()
    names = list(data.features)
    rows = np.column_stack([data.features[n] for n in names]).tolist()
    predictions = data.prediction.tolist()
    bodies: list[bytes] = []
    for b, start in enumerate(range(0, data.n - batch + 1, batch)):
        events = [
            {
                "id": f"e{b:05d}-{i:04d}",
                "timestamp": TIMESTAMP,
                "latency_seconds": latencies[start + i],
                "status": "ok",
                "features": dict(zip(names, rows[start + i], strict=True)),
                "prediction": predictions[start + i],
            }
            for i in range(batch)
        ]
        bodies.append(orjson.dumps({"model": MODEL, "version": VERSION, "events": events}))
    return bodies
