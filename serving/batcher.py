"""Micro-batching: concurrent requests grouped into one model call, run off the event loop.

Requests wait in a queue until it holds ``max_batch_size`` instances or the oldest has waited
``max_wait_seconds``; the batch is concatenated per ONNX input, scored by ONE call on a single
worker thread (ONNX Runtime releases the GIL, so the event loop keeps accepting meanwhile), and
the outputs are split back per request. A request larger than ``max_batch_size`` runs alone,
never split. When the batched call fails, each member is re-run alone so that only the request
the model cannot score gets the error and the others still get their predictions.

The batcher never validates: requests reach it already checked by ``serving.instances``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.errors import PredictionError
from serving.model import Inputs, Model, Outputs


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


class BatchObserver:
    """Where the batcher reports batch sizes and queue depth; the default records nothing."""

    def batch(self, instances: int, requests: int) -> None:
        """One model call over ``instances`` rows from ``requests`` requests."""

    def queue_depth(self, requests: int) -> None:
        """Requests now waiting for a batch."""


@dataclass(slots=True)
class _Pending:
    inputs: Inputs
    rows: int
    enqueued: float
    future: asyncio.Future[Outputs] = field(repr=False)


class MicroBatcher:
    """Groups ``submit`` calls into batched ``model.predict`` calls on one worker thread."""

    def __init__(
        self,
        model: Model,
        *,
        max_batch_size: int = 32,
        max_wait_seconds: float = 0.002,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_seconds < 0:
            raise ValueError(f"max_wait_seconds must be >= 0, got {max_wait_seconds}")
        self._model = model
        self._max_rows = max_batch_size
        self._max_wait = max_wait_seconds
        self._observer = observer or BatchObserver()
        self._clock = clock
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the collecting task and the worker thread (call from the event loop)."""
        if self._task is not None:
            raise RuntimeError("the batcher is already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task = asyncio.create_task(self._collect(), name="micro-batcher")

    async def submit(self, inputs: Inputs, rows: int) -> Outputs:
        """Score ``rows`` instances; raises ``PredictionError`` when the model fails on them."""
        if self._closing or self._task is None:
            raise BatcherClosedError("the model server is shutting down")
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, rows, self._clock(), future))
        self._queued_rows += rows
        self._observer.queue_depth(len(self._queue))
        self._nonempty.set()
        if self._queued_rows >= self._max_rows:
            self._full.set()
        return await future

    async def aclose(self, timeout: float = 10.0) -> bool:
        """Refuse new requests, score queued ones, stop; False when ``timeout`` ran out first."""
        self._closing = True
        drained = True
        if self._task is not None:
            # Wake the collector wherever it waits, so it scores what is queued and sees the flag.
            self._nonempty.set()
            self._full.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                drained = False
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            for pending in self._queue:
                if not pending.future.done():
                    pending.future.set_exception(BatcherClosedError("shut down before scoring"))
            self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=drained, cancel_futures=True)
        return drained

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._nonempty.clear()
                await self._nonempty.wait()
                continue
            if self._queued_rows < self._max_rows and not self._closing:
                await self._wait_for_more()
            batch = self._take()
            self._observer.queue_depth(len(self._queue))
            outcomes = await loop.run_in_executor(self._executor, self._score, batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)

    async def _wait_for_more(self) -> None:
        # ``_full`` tracks the queue (set by submit, cleared by _take), so it is never cleared
        # here: a close or a filling submit that happened before this wait still ends it.
        remaining = self._queue[0].enqueued + self._max_wait - self._clock()
        if remaining <= 0 or self._closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), remaining)

    def _take(self) -> list[_Pending]:
        """The oldest requests up to ``max_batch_size`` rows (always at least one request)."""
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self._max_rows:
            pending = self._queue.popleft()
            batch.append(pending)
            rows += pending.rows
        self._queued_rows -= rows
        if self._queued_rows < self._max_rows:
            self._full.clear()
        return batch

    def _score(self, batch: list[_Pending]) -> list[Outputs | BaseException]:
        """Runs on the worker thread: one call for the batch, one per member if that fails."""
        rows = sum(p.rows for p in batch)
        self._observer.batch(rows, len(batch))
        if len(batch) == 1:
            return [self._score_one(batch[0].inputs, rows)]
        try:
            outputs = _checked(self._model.predict(_concatenate([p.inputs for p in batch])), rows)
        except Exception:  # one bad member fails the whole call; find it below
            return [self._score_one(p.inputs, p.rows) for p in batch]
        results: list[Outputs | BaseException] = []
        start = 0
        for pending in batch:
            results.append(outputs.slice(start, start + pending.rows))
            start += pending.rows
        return results

    def _score_one(self, inputs: Inputs, rows: int) -> Outputs | BaseException:
        try:
            return _checked(self._model.predict(inputs), rows)
        except PredictionError as exc:
            return exc
        except Exception as exc:  # an injected or future runtime raising something else
            return PredictionError(f"{type(exc).__name__}: {exc}")


def _concatenate(members: list[Inputs]) -> dict[str, Any]:
    return {name: np.concatenate([m[name] for m in members]) for name in members[0]}


def _checked(outputs: Outputs, rows: int) -> Outputs:
    if len(outputs) != rows:
        raise PredictionError(f"the model returned {len(outputs)} predictions for {rows} rows")
    return outputs
