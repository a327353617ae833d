"""The compactor quantile sketch: exact while small, within its proven rank bound when not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from sidecar.sketch import QuantileSketch, worst_case_rank_error

FloatArray = NDArray[np.float64]
PROBS = np.linspace(0.0, 1.0, 1001)


def _assert_within_bound(data: FloatArray, sketch: QuantileSketch, probs: FloatArray) -> None:
    """Each answer is the exact quantile of some probability within the bound of the asked one."""
    ordered = np.sort(data)
    n = len(ordered)
    slack = sketch.max_rank_error * n + 1e-9 * n
    answers = sketch.quantiles(probs)
    below = np.searchsorted(ordered, answers, side="left")  # values < answer
    at_or_below = np.searchsorted(ordered, answers, side="right")  # values <= answer
    assert np.all(below <= probs * n + slack)
    assert np.all(at_or_below >= probs * n - slack)
    assert np.all(np.isin(answers, ordered))


def _orders(n: int) -> dict[str, FloatArray]:
    rng = np.random.default_rng(11)
    ramp = np.arange(n, dtype=np.float64)
    zigzag = np.empty(n)
    zigzag[0::2] = ramp[: (n + 1) // 2]
    zigzag[1::2] = ramp[::-1][: n // 2]
    return {
        "sorted": ramp,
        "reversed": ramp[::-1].copy(),
        "random": rng.permutation(ramp),
        "ties": rng.integers(0, 7, size=n).astype(np.float64),
        "sorted-ties": np.sort(rng.integers(0, 50, size=n)).astype(np.float64),
        "zigzag": zigzag,
        "heavy-tail": rng.standard_cauchy(size=n),
    }


@pytest.mark.parametrize("order", sorted(_orders(10)))
def test_rank_error_stays_under_the_bound_on_adversarial_orders(order: str) -> None:
    """On sorted, reversed, random, tied, zigzag and heavy-tailed streams the bound holds."""
    data = _orders(200_000)[order]
    sketch = QuantileSketch(size=512)
    for chunk in np.array_split(data, 37):
        sketch.update(chunk)
    assert not sketch.exact
    assert sketch.n == len(data)
    assert 0 < sketch.max_rank_error <= worst_case_rank_error(len(data), 512)
    _assert_within_bound(data, sketch, PROBS)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.integers(-20, 20), min_size=1, max_size=400),
    half_size=st.integers(1, 12),
    chunk=st.integers(1, 50),
)
def test_rank_bound_holds_for_any_small_stream(
    values: list[int], half_size: int, chunk: int
) -> None:
    """For arbitrary tied streams, sizes and chunkings the answers stay within the bound."""
    data = np.asarray(values, dtype=np.float64)
    sketch = QuantileSketch(size=2 * half_size)
    for start in range(0, len(data), chunk):
        sketch.update(data[start : start + chunk])
    assert sketch.max_rank_error <= worst_case_rank_error(len(data), 2 * half_size)
    _assert_within_bound(data, sketch, PROBS)


@pytest.mark.parametrize("n", [1, 2, 999, 4096])
def test_exact_mode_equals_numpy_inverted_cdf(n: int) -> None:
    """While n <= size every quantile equals np.quantile(method="inverted_cdf")."""
    data = np.random.default_rng(n).normal(size=n)
    sketch = QuantileSketch(size=4096)
    for chunk in np.array_split(data, 5):
        sketch.update(chunk)
    assert sketch.exact
    assert sketch.max_rank_error == 0.0
    expected = np.quantile(data, PROBS, method="inverted_cdf")
    np.testing.assert_array_equal(sketch.quantiles(PROBS), expected)


def test_one_value_over_the_size_compacts() -> None:
    """The sketch stays exact at exactly `size` values and compacts at the next one."""
    sketch = QuantileSketch(size=64)
    sketch.update(np.arange(64.0))
    assert sketch.exact
    sketch.update([64.0])
    assert sketch.max_rank_error > 0
    assert sketch.n == 65


def test_answers_do_not_depend_on_how_the_stream_is_chunked() -> None:
    """The same values in the same order give the same quantiles whatever the chunk sizes."""
    data = np.random.default_rng(3).exponential(size=50_000)
    whole = QuantileSketch(size=256)
    whole.update(data)
    pieces = QuantileSketch(size=256)
    for chunk in np.array_split(data, 113):
        pieces.update(chunk)
    np.testing.assert_array_equal(whole.quantiles(PROBS), pieces.quantiles(PROBS))
    assert whole.max_rank_error == pieces.max_rank_error


def test_merged_sketch_answers_for_the_union_within_the_summed_bound() -> None:
    """Merging two sketches covers both streams; the bound includes both sketches' errors."""
    rng = np.random.default_rng(5)
    left, right = rng.normal(size=30_000), rng.uniform(-3, 3, size=45_000)
    a, b = QuantileSketch(size=256), QuantileSketch(size=256)
    a.update(left)
    b.update(right)
    bound_before = a.max_rank_error * a.n + b.max_rank_error * b.n
    a.merge(b)
    assert a.n == 75_000
    assert a.max_rank_error * a.n >= bound_before
    assert a.max_rank_error <= worst_case_rank_error(a.n, 256)
    _assert_within_bound(np.concatenate((left, right)), a, PROBS)


def test_memory_grows_logarithmically_with_the_stream() -> None:
    """Retained values never exceed size × (ceil(log2(n/size)) + 1), far below n."""
    size = 256
    sketch = QuantileSketch(size=size)
    rng = np.random.default_rng(9)
    for _ in range(100):
        sketch.update(rng.normal(size=10_000))
        limit = size * (math.ceil(math.log2(sketch.n / size)) + 1)
        assert sketch.retained <= limit
    assert sketch.n == 1_000_000
    assert sketch.retained < sketch.n / 100


def test_worst_case_formula_matches_the_documented_default() -> None:
    """With the default size, a billion rows give under 0.03 % rank error."""
    assert worst_case_rank_error(1_000_000_000, 65_536) < 3e-4
    assert worst_case_rank_error(65_536, 65_536) == 0.0


@pytest.mark.parametrize("size", [0, 1, 7])
def test_size_must_be_even_and_at_least_two(size: int) -> None:
    """A size that cannot be halved evenly is refused."""
    with pytest.raises(ValueError, match="even"):
        QuantileSketch(size=size)


def test_non_finite_values_are_refused() -> None:
    """NaN and infinities are the caller's missing values, never sketched."""
    sketch = QuantileSketch(size=8)
    with pytest.raises(ValueError, match="finite"):
        sketch.update([1.0, np.nan])
    with pytest.raises(ValueError, match="finite"):
        sketch.update([np.inf])
    assert sketch.n == 0


def test_quantiles_need_values_and_valid_probabilities() -> None:
    """An empty sketch or a probability outside [0, 1] raises ValueError."""
    sketch = QuantileSketch(size=8)
    with pytest.raises(ValueError, match="no values"):
        sketch.quantiles([0.5])
    sketch.update([1.0, 2.0])
    with pytest.raises(ValueError, match="probabilities"):
        sketch.quantiles([1.5])
    with pytest.raises(ValueError, match="probabilities"):
        sketch.quantiles([np.nan])


def test_merge_refuses_a_different_size() -> None:
    """Sketches of different sizes cannot be merged."""
    with pytest.raises(ValueError, match="size"):
        QuantileSketch(size=8).merge(QuantileSketch(size=16))
