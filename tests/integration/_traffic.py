"""Profiles and events of the alerting end-to-end tests, and the pace at which they are sent.

``credit`` has four numeric features and one categorical feature, with a categorical
prediction; its events can shift chosen numeric features by ``SHIFT`` standard deviations.
``simple_events`` turns numeric columns into events of a model without a prediction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sidecar.profile import Profile
from tests.support.profiles import make_profile

BATCH = 25
BATCH_SECONDS = 0.5
"""50 events/s per fed model: 3 000 per 1-minute window, six times the 500-event guard."""
CREDIT_NUMERIC = ("income", "debt_ratio", "age", "tenure")
SHIFT = 1.5
"""Shift of the drifted features, in standard deviations of the reference."""
SEGMENTS = ("retail", "business", "premium")
SEGMENT_P = (0.6, 0.3, 0.1)

Events = list[dict[str, Any]]


class Pacer:
    """Sends one batch per call, then waits out the rest of its period (the traffic's rate)."""

    def __init__(self, send: Callable[[], None], period: float = BATCH_SECONDS) -> None:
        self._send = send
        self._period = period
        self._next = time.monotonic()

    def __call__(self) -> None:
        self._send()
        self._next += self._period
        time.sleep(max(0.0, self._next - time.monotonic()))


def credit_profile(rng: np.random.Generator) -> Profile:
    """The reference profile of ``credit``: standard normal features, 60/30/10 segments."""
    n = 20_000
    return make_profile(
        model="credit",
        numeric={name: rng.normal(0.0, 1.0, n) for name in CREDIT_NUMERIC},
        categorical={"segment": list(rng.choice(SEGMENTS, n, p=SEGMENT_P))},
        prediction=list(rng.choice(["approve", "reject"], n, p=(0.7, 0.3))),
        prediction_kind="categorical",
    )


def credit_events(rng: np.random.Generator, n: int, shifted: frozenset[str]) -> Events:
    """``n`` events of ``credit``, the ``shifted`` numeric features moved by ``SHIFT``."""
    columns = {
        name: rng.normal(SHIFT if name in shifted else 0.0, 1.0, n) for name in CREDIT_NUMERIC
    }
    segments = rng.choice(SEGMENTS, n, p=SEGMENT_P)
    predictions = rng.choice(["approve", "reject"], n, p=(0.7, 0.3))
    return [
        {
            "latency_seconds": 0.01,
            "features": {
                **{name: float(col[i]) for name, col in columns.items()},
                "segment": str(segments[i]),
            },
            "prediction": str(predictions[i]),
        }
        for i in range(n)
    ]


def simple_events(columns: Mapping[str, NDArray[np.float64]], latency: float) -> Events:
    """One event per row of the numeric ``columns``, each with ``latency`` and no prediction."""
    n = len(next(iter(columns.values())))
    return [
        {
            "latency_seconds": latency,
            "features": {name: float(col[i]) for name, col in columns.items()},
            "prediction": None,
        }
        for i in range(n)
    ]
