"""Ground-truth labels joined to the predictions they score, in bounded memory.

Labels arrive late (``POST /v1/feedback``, possibly hours after the prediction), so the store
remembers each accepted prediction by event id in a bounded, insertion-ordered cache per model
version, and keeps a fixed-size ring of the scores of the last joined pairs. Memory is bounded
by ``capacity`` + ``window`` per model version, never by traffic: the oldest predictions are
evicted beyond ``capacity`` or after ``ttl_seconds``, whichever comes first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Metric = Literal["accuracy", "mean_absolute_error"]


@dataclass(frozen=True, slots=True)
class ModelQuality:
    """Model quality over the last joined labels of one model version.

    ``metric`` is ``accuracy`` (share of labels equal to the prediction's category) for a
    categorical prediction and ``mean_absolute_error`` for a numeric one; ``labels`` is how many
    joined pairs ``value`` is computed over (at most the store's ``window``).
    """

    model: str
    version: str
    metric: Metric
    value: float
    labels: int


class _Ring:
    """The scores of the last ``size`` joined pairs (1/0 for a hit/miss, or |error|)."""

    def __init__(self, size: int) -> None:
        self.values = np.zeros(size, dtype=np.float64)
        self.next = 0
        self.filled = 0

    def extend(self, scores: NDArray[np.float64]) -> None:
        size = len(self.values)
        if len(scores) >= size:
            self.values[:] = scores[-size:]
            self.next, self.filled = 0, size
            return
        end = self.next + len(scores)
        if end <= size:
            self.values[self.next : end] = scores
        else:
            split = size - self.next
            self.values[self.next :] = scores[:split]
            self.values[: end - size] = scores[split:]
        self.next = end % size
        self.filled = min(size, self.filled + len(scores))

    def mean(self) -> float:
        return float(self.values[: self.filled].mean())


class _ModelFeedback:
    """The prediction cache and score ring of one model version."""

    def __init__(self, metric: Metric, window: int) -> None:
        self.metric: Metric = metric
        self.predictions: OrderedDict[str, tuple[float, float | str]] = OrderedDict()
        self.ring = _Ring(window)


class FeedbackStore:
    """Joins labels to remembered predictions by event id; reports accuracy or MAE.

    Thread-safe: the ingest app writes while the Prometheus collector reads ``quality()``.
    ``clock`` is injected so tests can move time; it must be monotonic.
    """

    def __init__(
        self,
        capacity: int = 100_000,
        window: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        ttl_seconds: float = 86_400,
    ) -> None:
        if capacity < 1 or window < 1 or ttl_seconds <= 0:
            raise ValueError("capacity, window and ttl_seconds must be positive")
        self._capacity = capacity
        self._window = window
        self._clock = clock
        self._ttl = ttl_seconds
        self._models: dict[tuple[str, str], _ModelFeedback] = {}
        self._lock = threading.Lock()

    def remember(
        self,
        model: str,
        version: str,
        ids: Sequence[str],
        predictions: NDArray[np.float64] | Sequence[str | None],
    ) -> None:
        """Remember the prediction of each accepted event; missing predictions are skipped.

        A float64 array means a numeric prediction (scored by absolute error), a sequence of
        category keys a categorical one (scored by equality). Re-sending an id replaces its
        prediction and makes it the newest entry.
        """
        numeric = isinstance(predictions, np.ndarray)
        values: list[float] | list[str | None] = (
            predictions.tolist() if isinstance(predictions, np.ndarray) else list(predictions)
        )
        now = self._clock()
        with self._lock:
            state = self._state(model, version, "mean_absolute_error" if numeric else "accuracy")
            cache = state.predictions
            for event_id, value in zip(ids, values, strict=True):
                # NaN != NaN: a missing numeric prediction has nothing to be scored against.
                if value is None or value != value:
                    continue
                if event_id in cache:
                    cache.move_to_end(event_id)
                cache[event_id] = (now, value)
            self._evict(cache, now)

    def label(
        self, model: str, version: str, labels: Sequence[tuple[str, float | str]]
    ) -> tuple[int, int]:
        """Join ``(id, label)`` pairs to remembered predictions; return ``(joined, unmatched)``.

        A joined prediction is forgotten, so a second label for the same id is unmatched. Labels
        must have the prediction's kind (float for numeric, category key for categorical);
        ``sidecar.events.parse_feedback`` converts them.
        """
        now = self._clock()
        with self._lock:
            state = self._models.get((model, version))
            if state is None:
                return 0, len(labels)
            cache = state.predictions
            self._evict(cache, now)
            predicted: list[float | str] = []
            observed: list[float | str] = []
            for event_id, label in labels:
                entry = cache.pop(event_id, None)
                if entry is not None:
                    predicted.append(entry[1])
                    observed.append(label)
            if predicted:
                state.ring.extend(_scores(state.metric, predicted, observed))
            return len(predicted), len(labels) - len(predicted)

    def quality(self) -> list[ModelQuality]:
        """Quality of every model version that has at least one joined label."""
        with self._lock:
            return [
                ModelQuality(model, version, state.metric, state.ring.mean(), state.ring.filled)
                for (model, version), state in sorted(self._models.items())
                if state.ring.filled
            ]

    def pending(self, model: str, version: str) -> int:
        """How many predictions of ``model``/``version`` are waiting for a label."""
        with self._lock:
            state = self._models.get((model, version))
            return 0 if state is None else len(state.predictions)

    def _state(self, model: str, version: str, metric: Metric) -> _ModelFeedback:
        state = self._models.get((model, version))
        if state is None:
            state = _ModelFeedback(metric, self._window)
            self._models[(model, version)] = state
        return state

    def _evict(self, cache: OrderedDict[str, tuple[float, float | str]], now: float) -> None:
        while len(cache) > self._capacity:
            cache.popitem(last=False)
        horizon = now - self._ttl
        while cache:
            oldest = next(iter(cache.values()))
            if oldest[0] >= horizon:
                break
            cache.popitem(last=False)


def _scores(
    metric: Metric, predicted: list[float | str], observed: list[float | str]
) -> NDArray[np.float64]:
    if metric == "accuracy":
        return np.fromiter(
            (p == o for p, o in zip(predicted, observed, strict=True)),
            dtype=np.float64,
            count=len(predicted),
        )
    return np.abs(np.asarray(predicted, dtype=np.float64) - np.asarray(observed, dtype=np.float64))
