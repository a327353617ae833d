"""Tests of the feedback store: joining labels to predictions, quality, and bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.feedback import FeedbackStore, ModelQuality


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_categorical_labels_give_accuracy() -> None:
    """Categorical predictions joined to labels give the share of labels equal to the prediction."""
    store = FeedbackStore()
    store.remember("m", "1", ["a", "b", "c", "d"], ["1", "0", "1", "1"])
    joined, unmatched = store.label("m", "1", [("a", "1"), ("b", "1"), ("c", "1"), ("zz", "1")])
    assert (joined, unmatched) == (3, 1)
    assert store.quality() == [ModelQuality("m", "1", "accuracy", 2 / 3, 3)]


def test_numeric_labels_give_mean_absolute_error() -> None:
    """Numeric predictions joined to labels give the mean absolute error over the joined pairs."""
    store = FeedbackStore()
    predictions = np.array([1.0, 2.0, 3.0, np.nan])
    store.remember("m", "1", ["a", "b", "c", "d"], predictions)
    joined, unmatched = store.label("m", "1", [("a", 1.5), ("c", 1.0), ("d", 0.0)])
    assert (joined, unmatched) == (2, 1)
    [quality] = store.quality()
    assert quality.metric == "mean_absolute_error"
    assert quality.value == pytest.approx((0.5 + 2.0) / 2)
    assert quality.labels == 2


def test_missing_predictions_are_not_remembered() -> None:
    """A missing prediction (None or NaN) has nothing to be scored against and is skipped."""
    store = FeedbackStore()
    store.remember("m", "1", ["a", "b"], ["1", None])
    store.remember("m", "2", ["a", "b"], np.array([np.nan, 1.0]))
    assert (store.pending("m", "1"), store.pending("m", "2")) == (1, 1)


def test_a_prediction_joins_once() -> None:
    """A second label for the same id is unmatched, so a replay cannot inflate the label count."""
    store = FeedbackStore()
    store.remember("m", "1", ["a"], ["1"])
    assert store.label("m", "1", [("a", "1")]) == (1, 0)
    assert store.label("m", "1", [("a", "1")]) == (0, 1)
    assert store.quality()[0].labels == 1


def test_labels_for_an_unseen_model_are_unmatched() -> None:
    """Labels for a model version with no remembered prediction are all unmatched."""
    store = FeedbackStore()
    assert store.label("m", "1", [("a", 1.0), ("b", 2.0)]) == (0, 2)
    assert store.quality() == []


def test_model_versions_are_kept_apart() -> None:
    """The same id under two model versions is two predictions, each joined on its own."""
    store = FeedbackStore()
    store.remember("m", "1", ["a"], ["1"])
    store.remember("m", "2", ["a"], ["0"])
    store.label("m", "1", [("a", "1")])
    store.label("m", "2", [("a", "1")])
    assert store.quality() == [
        ModelQuality("m", "1", "accuracy", 1.0, 1),
        ModelQuality("m", "2", "accuracy", 0.0, 1),
    ]


def test_capacity_evicts_the_oldest_predictions() -> None:
    """Beyond capacity the oldest predictions are forgotten, so their labels are unmatched."""
    store = FeedbackStore(capacity=3)
    store.remember("m", "1", ["a", "b", "c", "d", "e"], ["1"] * 5)
    assert store.pending("m", "1") == 3
    assert store.label("m", "1", [("a", "1"), ("b", "1"), ("c", "1"), ("e", "1")]) == (2, 2)


def test_resending_an_id_makes_it_newest() -> None:
    """Remembering an id again replaces its prediction and protects it from eviction."""
    store = FeedbackStore(capacity=2)
    store.remember("m", "1", ["a", "b"], ["1", "1"])
    store.remember("m", "1", ["a"], ["0"])
    store.remember("m", "1", ["c"], ["1"])
    assert store.label("m", "1", [("a", "0"), ("b", "1")]) == (1, 1)
    assert store.quality()[0].value == 1.0


def test_ttl_forgets_old_predictions() -> None:
    """Predictions older than ttl_seconds are forgotten; younger ones still join."""
    clock = FakeClock()
    store = FeedbackStore(clock=clock, ttl_seconds=60)
    store.remember("m", "1", ["old"], ["1"])
    clock.now += 30
    store.remember("m", "1", ["young"], ["1"])
    clock.now += 31
    assert store.label("m", "1", [("old", "1"), ("young", "1")]) == (1, 1)


def test_quality_is_over_the_last_window_pairs() -> None:
    """Quality covers only the last ``window`` joined pairs, across several label calls."""
    store = FeedbackStore(window=4)
    ids = [str(i) for i in range(10)]
    store.remember("m", "1", ids, np.arange(10, dtype=np.float64))
    # Errors: ids 0..5 are off by 10, ids 6..9 by 1; the window must hold only the last four.
    store.label("m", "1", [(str(i), i + 10.0) for i in range(3)])
    store.label("m", "1", [(str(i), i + 10.0) for i in range(3, 6)])
    store.label("m", "1", [(str(i), i + 1.0) for i in range(6, 9)])
    store.label("m", "1", [("9", 10.0)])
    [quality] = store.quality()
    assert quality.labels == 4
    assert quality.value == pytest.approx(1.0)


def test_one_label_call_larger_than_the_window_keeps_its_tail() -> None:
    """A single call joining more pairs than the window keeps the most recent ``window`` scores."""
    store = FeedbackStore(window=3)
    ids = [str(i) for i in range(6)]
    store.remember("m", "1", ids, ["1"] * 6)
    store.label("m", "1", [("0", "1"), ("1", "1"), ("2", "1"), ("3", "0"), ("4", "0"), ("5", "1")])
    assert store.quality() == [ModelQuality("m", "1", "accuracy", 1 / 3, 3)]


def test_memory_is_bounded_by_capacity_not_traffic() -> None:
    """Remembering far more predictions than capacity keeps exactly capacity of them."""
    store = FeedbackStore(capacity=1000, window=10)
    for batch in range(50):
        ids = [f"{batch}-{i}" for i in range(500)]
        store.remember("m", "1", ids, np.ones(500))
    assert store.pending("m", "1") == 1000


def test_invalid_bounds_are_refused() -> None:
    """Zero capacity, window or ttl is a configuration bug and raises."""
    with pytest.raises(ValueError, match="must be positive"):
        FeedbackStore(capacity=0)
