"""The micro-batcher: grouping, size limits, error isolation and shutdown, with a fake model."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from serving.batcher import BatcherClosedError, BatchObserver, MicroBatcher
from serving.errors import PredictionError
from serving.model import Inputs, Outputs

LONG_WAIT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Doubler:
    """Predicts 2·x; fails any call holding a negative x; records each call's row count."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, inputs: Inputs) -> Outputs:
        self.gate.wait(LONG_WAIT)
        x = inputs["x"][:, 0]
        self.calls.append(len(x))
        if np.any(x < 0):
            raise PredictionError("negative input")
        return Outputs(x * 2.0, np.stack([x, -x], axis=1))


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.depths: list[int] = []

    def batch(self, instances: int, requests: int) -> None:
        self.batches.append((instances, requests))

    def queue_depth(self, requests: int) -> None:
        self.depths.append(requests)


def rows(*values: float) -> Inputs:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}


async def _submit_all(batcher: MicroBatcher, *requests: tuple[float, ...]) -> list[Any]:
    tasks = [batcher.submit(rows(*r), len(r)) for r in requests]
    return list(await asyncio.gather(*tasks, return_exceptions=True))


@pytest.mark.anyio
async def test_concurrent_requests_become_one_call_and_split_back() -> None:
    """Requests filling max_batch_size are scored in one call, each getting its own rows back."""
    model, observer = Doubler(), Recorder()
    batcher = MicroBatcher(model, max_batch_size=6, max_wait_seconds=LONG_WAIT, observer=observer)
    batcher.start()
    results = await _submit_all(batcher, (1.0,), (2.0, 3.0), (4.0, 5.0, 6.0))
    await batcher.aclose()
    assert model.calls == [6]
    assert observer.batches == [(6, 3)]
    assert [r.predictions.tolist() for r in results] == [[2.0], [4.0, 6.0], [8.0, 10.0, 12.0]]
    assert [r.scores[:, 1].tolist() for r in results] == [[-1.0], [-2.0, -3.0], [-4.0, -5.0, -6.0]]


@pytest.mark.anyio
async def test_batches_never_exceed_max_batch_size() -> None:
    """Queued requests are cut into batches of at most max_batch_size rows, oldest first."""
    model = Doubler()
    model.gate.clear()  # hold the first call so the rest queue up behind it
    batcher = MicroBatcher(model, max_batch_size=4, max_wait_seconds=0.0)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(rows(0.0), 1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(rows(float(i)), 1)) for i in range(1, 10)]
    model.gate.set()
    results = await asyncio.gather(first, *rest)
    await batcher.aclose()
    assert [r.predictions.tolist() for r in results] == [[2.0 * i] for i in range(10)]
    assert max(model.calls) <= 4
    assert sum(model.calls) == 10


@pytest.mark.anyio
async def test_a_request_larger_than_the_batch_runs_alone() -> None:
    """A request with more rows than max_batch_size is scored whole, in its own call."""
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=2, max_wait_seconds=0.0)
    batcher.start()
    (result,) = await _submit_all(batcher, (1.0, 2.0, 3.0, 4.0, 5.0))
    await batcher.aclose()
    assert model.calls == [5]
    assert result.predictions.tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]


@pytest.mark.anyio
async def test_max_batch_size_one_never_groups() -> None:
    """With max_batch_size 1 every request is its own model call."""
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=1, max_wait_seconds=LONG_WAIT)
    batcher.start()
    await _submit_all(batcher, (1.0,), (2.0,), (3.0,))
    await batcher.aclose()
    assert model.calls == [1, 1, 1]


@pytest.mark.anyio
async def test_a_failing_member_is_isolated() -> None:
    """When the batched call fails, members are re-run alone and only the bad one errors."""
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=3, max_wait_seconds=LONG_WAIT)
    batcher.start()
    good, bad, other = await _submit_all(batcher, (1.0,), (-1.0,), (3.0,))
    await batcher.aclose()
    assert good.predictions.tolist() == [2.0]
    assert other.predictions.tolist() == [6.0]
    assert isinstance(bad, PredictionError)
    assert model.calls == [3, 1, 1, 1]


@pytest.mark.anyio
async def test_wrong_output_length_is_a_prediction_error() -> None:
    """A model answering fewer rows than asked is a PredictionError, not a misaligned split."""

    class Short:
        def predict(self, inputs: Inputs) -> Outputs:
            return Outputs(np.zeros(1))

    batcher = MicroBatcher(Short(), max_batch_size=1, max_wait_seconds=0.0)
    batcher.start()
    (result,) = await _submit_all(batcher, (1.0, 2.0))
    await batcher.aclose()
    assert isinstance(result, PredictionError)
    assert "1 predictions for 2 rows" in str(result)


@pytest.mark.anyio
async def test_close_scores_queued_requests_then_refuses_new_ones() -> None:
    """Aclose lets queued requests finish; a submit after it raises BatcherClosedError."""
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_seconds=LONG_WAIT)
    batcher.start()
    pending = asyncio.ensure_future(batcher.submit(rows(7.0), 1))
    await asyncio.sleep(0)
    assert await batcher.aclose(timeout=LONG_WAIT)
    assert (await pending).predictions.tolist() == [14.0]
    with pytest.raises(BatcherClosedError):
        await batcher.submit(rows(1.0), 1)


def test_invalid_limits_are_refused() -> None:
    """A batch size below 1 or a negative wait is a ValueError naming the argument."""
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Doubler(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_seconds"):
        MicroBatcher(Doubler(), max_wait_seconds=-1.0)
