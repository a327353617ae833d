"""The prediction logger: how a model server sends every prediction to the modelwatch sidecar.

    logger = PredictionLogger(model="breast-cancer", version="3")
    logger.start()
    logger.log(features=row, prediction=label, latency_seconds=elapsed)

``log()`` never blocks and never raises into the prediction path: it encodes the event and
appends it to a bounded buffer; ``log_many()`` does the same for all instances of a request with
one clock read. The common case takes no lock: the buffer is a ``deque`` shared with one daemon
thread (``sidecar._client_sender``), which sends batches (by count and by time) to
``POST /v1/events``, retries with jittered backoff while the sidecar is slow, down or restarting,
and counts what became of every event. When the buffer is full the oldest events are dropped and
counted. Every logged event ends as exactly one of sent, dropped, rejected or sampled out.
Standard library only at import (``orjson`` when importable, ``prometheus_client`` only when a
registry is passed). The guide is ``docs/client.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, cast

from sidecar._client_arguments import check_arguments
from sidecar._client_delivery import Problem
from sidecar._client_encoding import EncodeError, dumps, encode_event, envelope
from sidecar._client_ids import new_event_id
from sidecar._client_sender import Batching, Ledger, Sender, Transport
from sidecar._client_throttle import Log, Throttle
from sidecar._client_transport import Endpoint, TransportResponse, parse_url, transport_for

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "DEFAULT_URL",
    "Endpoint",
    "Log",
    "LoggerStats",
    "PredictionLogger",
    "Transport",
    "TransportResponse",
    "new_event_id",
    "parse_url",
]

DEFAULT_URL = "http://127.0.0.1:8081"
LOG_EVERY_SECONDS = 60.0
"""A problem is logged when first seen, then at most once per this period, with a count."""


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counts since construction.

    ``logged == sent + dropped + rejected + sampled_out + buffered + in_flight`` holds in every
    snapshot; once ``close()`` has returned and no call is in progress, ``buffered`` and
    ``in_flight`` are 0.
    """

    logged: int
    sampled_out: int
    sent: int
    dropped: int
    rejected: int
    buffered: int
    in_flight: int


class PredictionLogger:
    """Buffers prediction events and ships them to the sidecar from one background thread."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        url: str = DEFAULT_URL,
        token: str | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        sample_rate: float = 1.0,
        timeout: float = 2.0,
        max_backoff: float = 10.0,
        registry: CollectorRegistry | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        logger: Log | None = None,
    ) -> None:
        check_arguments(
            model=model,
            version=version,
            url=url,
            token=token,
            max_buffer=max_buffer,
            batch_size=batch_size,
            flush_interval=flush_interval,
            sample_rate=sample_rate,
            timeout=timeout,
            max_backoff=max_backoff,
        )
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._sample_rate = sample_rate
        self._sample_below = int(sample_rate * 2.0**64)
        self._clock = clock
        self._rng = random.Random() if rng is None else rng
        log: Log = logging.getLogger(__name__) if logger is None else logger
        self._notes = Throttle(
            _with_model_fields(log, model, version),
            clock,
            f"prediction logger ({model} {version}): ",
            LOG_EVERY_SECONDS,
        )
        # Shared with the sender thread: the request path appends to the deque (atomic) and
        # sets the event when a batch has filled; the ledger and its lock are for the rest.
        self._buffer: deque[bytes] = deque()
        self._ready = threading.Event()
        self._ledger = Ledger()
        self._closing = False
        self._sender = Sender(
            buffer=self._buffer,
            ready=self._ready,
            ledger=self._ledger,
            transport=transport_for(url, token) if transport is None else transport,
            envelope=envelope(model, version),
            batching=Batching(batch_size, max_buffer, flush_interval, timeout, max_backoff),
            notes=self._notes,
            clock=clock,
            rng=self._rng,
        )
        if registry is not None:
            from sidecar import _client_metrics

            _client_metrics.register(registry, self.stats, max_buffer, model=model, version=version)

    # ------------------------------------------------------------------ the prediction path

    def log(
        self,
        *,
        features: Mapping[str, object],
        prediction: object,
        latency_seconds: float,
        status: str = "ok",
        event_id: str | None = None,
        timestamp: float | None = None,
        scores: Mapping[str, float] | None = None,
        trace_id: str | None = None,
        attributes: Mapping[str, object] | None = None,
    ) -> str | None:
        """Queue one prediction; its id (``new_event_id()`` unless given), None if sampled out.

        Never blocks and never raises: a value JSON cannot carry is counted as rejected, any
        other failure as dropped, and both are logged (by the sender thread, once with
        context). Only a call after ``close()`` writes its warning on the caller's thread.
        """
        eid = event_id
        try:
            if self._sample_rate < 1.0 and not self._keep(event_id):
                with self._ledger.lock:
                    self._ledger.sampled_out += 1
                return None
            if eid is None:
                eid = new_event_id()
            event: dict[str, object] = {
                "id": eid,
                "timestamp": time.time() if timestamp is None else timestamp,
                "latency_seconds": latency_seconds,
                "status": status,
                "features": features,
                "prediction": prediction,
            }
            if scores is not None:
                event["scores"] = scores
            if trace_id is not None:
                event["trace_id"] = trace_id
            if attributes is not None:
                event["attributes"] = attributes
            try:
                data = encode_event(event)
            except EncodeError as exc:
                self._settle_locally("rejected", f"event {eid!r} is not valid JSON: {exc}")
                return eid
            self._admit(data, "log()")
        except Exception as exc:
            self._settle_locally("dropped", f"internal error in log(): {type(exc).__name__}: {exc}")
        return eid

    def log_many(
        self,
        *,
        features: Sequence[Mapping[str, object]],
        predictions: Sequence[object],
        latency_seconds: float,
        status: str = "ok",
        event_ids: Sequence[str] | None = None,
        timestamp: float | None = None,
        scores: Sequence[Mapping[str, float] | None] | None = None,
        trace_id: str | None = None,
        attributes: Mapping[str, object] | None = None,
    ) -> list[str | None]:
        """Queue one prediction per row of ``features``, as many ``log()`` calls would.

        Row ``i`` is ``features[i]``, ``predictions[i]``, ``event_ids[i]`` and ``scores[i]``;
        latency, status, timestamp, trace id and attributes are shared. It appends to the
        buffer once and reads the clock once. The ids (None where sampled out), in row order.
        Never blocks and never raises: sequences of different lengths queue nothing and count
        ``len(features)`` events as dropped. One row with nothing to sample out (the model
        server's call) takes a shorter path with the same bytes and counts (``_log_one``).
        """
        # The model server calls this once per request, so it is written for a short path:
        # on one core, every bytecode here is CPU the request pays (docs/performance.md).
        try:
            n = len(features)
            if n == 1 and self._sample_rate >= 1.0:
                one = self._log_one(
                    features,
                    predictions,
                    latency_seconds,
                    status,
                    event_ids,
                    timestamp,
                    scores,
                    trace_id,
                    attributes,
                )
                if one is not None:
                    return one
            # A None among the given ids gets a new id: None marks a row sampled out, and a
            # row skipped for it would be counted nowhere.
            ids: list[str | None] = (
                [new_event_id() for _ in range(n)]
                if event_ids is None
                else [new_event_id() if eid is None else eid for eid in event_ids]
            )
            if len(predictions) != n or len(ids) != n or (scores is not None and len(scores) != n):
                lengths = (len(predictions), len(ids), n if scores is None else len(scores))
                self._settle_locally(
                    "dropped",
                    f"log_many(): features, predictions, event_ids and scores must have one "
                    f"length, got {n}, {lengths[0]}, {lengths[1]}, {lengths[2]}",
                    count=n,
                )
                return ids
            sampled_out = 0 if self._sample_rate >= 1.0 else self._sample(ids, event_ids)
            event: dict[str, object] = {
                "id": "",
                "timestamp": time.time() if timestamp is None else timestamp,
                "latency_seconds": latency_seconds,
                "status": status,
            }
            if trace_id is not None:
                event["trace_id"] = trace_id
            if attributes is not None:
                event["attributes"] = attributes
            records: list[bytes] = []
            rejected = 0
            problem = ""
            for i, eid in enumerate(ids):
                if eid is None:
                    continue
                # One dict, refilled per row: encoding copies it, so reuse is safe.
                event["id"] = eid
                event["features"] = features[i]
                event["prediction"] = predictions[i]
                if scores is not None and (row_scores := scores[i]) is not None:
                    event["scores"] = row_scores
                elif "scores" in event:
                    del event["scores"]
                try:
                    records.append(encode_event(event))
                except EncodeError as exc:
                    rejected += 1
                    problem = problem or f"event {eid!r} is not valid JSON: {exc}"
            buffer = self._buffer
            before = len(buffer)
            if sampled_out or rejected or before + len(records) > self._max_buffer:
                self._admit_many(records, sampled_out, rejected, problem)
                return ids
            # The common case: everything fits and nothing else to count.
            buffer.extend(records)
            if len(buffer) >= self._batch_size:
                self._wake()
            if self._closing:
                self._settle_late("log_many()", len(records))
        except Exception as exc:
            count = len(features) if isinstance(features, Sequence) else 1
            self._settle_locally(
                "dropped",
                f"internal error in log_many(): {type(exc).__name__}: {exc}",
                count=count,
            )
            return [None] * count
        return ids

    def _log_one(
        self,
        features: Sequence[Mapping[str, object]],
        predictions: Sequence[object],
        latency_seconds: float,
        status: str,
        event_ids: Sequence[str] | None,
        timestamp: float | None,
        scores: Sequence[Mapping[str, float] | None] | None,
        trace_id: str | None,
        attributes: Mapping[str, object] | None,
    ) -> list[str | None] | None:
        """``log_many()`` of one row with nothing sampled out; None leaves it to the long path.

        One instance per request is the model server's common case. The event is the one the
        long path builds, keys in the same order, written as one dict display. Whatever is
        unusual (rows of other lengths, a given None id, a value only ``encode_event``'s
        options can write) goes the long way, which then decides and counts exactly as it
        does for any call; a full buffer or a closing logger takes ``_admit``'s uncommon
        branches, the ones the long path takes for one row.
        """
        if len(predictions) != 1:
            return None
        if event_ids is None:
            eid = new_event_id()
        elif len(event_ids) != 1 or (eid := event_ids[0]) is None:
            return None
        if scores is None:
            row_scores = None
        elif len(scores) != 1:
            return None
        else:
            row_scores = scores[0]
        event: dict[str, object] = {
            "id": eid,
            "timestamp": time.time() if timestamp is None else timestamp,
            "latency_seconds": latency_seconds,
            "status": status,
        }
        if trace_id is not None:
            event["trace_id"] = trace_id
        if attributes is not None:
            event["attributes"] = attributes
        event["features"] = features[0]
        event["prediction"] = predictions[0]
        if row_scores is not None:
            event["scores"] = row_scores
        try:
            data = b"".join((dumps(event), b""))  # an exact-size copy (see dumps)
        except EncodeError:
            return None
        self._admit(data, "log_many()")
        return [eid]

    def _sample(self, ids: list[str | None], given: Sequence[str | None] | None) -> int:
        """Set the ids of the rows sampled out to None; how many they are.

        A row is sampled as ``log()`` samples it: by its given id, or at random when it had
        none (a None among ``given`` included), even though it has a new id by now.
        """
        sampled_out = 0
        for i in range(len(ids)):
            if not self._keep(None if given is None else given[i]):
                ids[i] = None
                sampled_out += 1
        return sampled_out

    def _keep(self, event_id: str | None) -> bool:
        if event_id is None:
            return self._rng.random() < self._sample_rate
        digest = hashlib.blake2b(str(event_id).encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") < self._sample_below

    def _admit(self, data: bytes, caller: str) -> None:
        """Buffer one encoded event: the common branch, or the long way when the buffer is full."""
        buffer = self._buffer
        if len(buffer) >= self._max_buffer:
            self._admit_many([data], 0, 0, "", caller)
            return
        buffer.append(data)
        if len(buffer) >= self._batch_size:
            self._wake()
        if self._closing:
            self._settle_late(caller, 1)

    def _admit_many(
        self,
        records: list[bytes],
        sampled_out: int,
        rejected: int,
        why: str,
        caller: str = "log_many()",
    ) -> None:
        """Count and buffer one call's events the long way.

        It runs when the buffer is full, a row was sampled out or rejected, or the logger is
        closing; it takes the ledger's lock, which the common path does not.
        """
        ledger = self._ledger
        with ledger.lock:
            ledger.sampled_out += sampled_out
            if rejected:
                ledger.rejected += rejected
                ledger.problems["rejected"] = Problem(
                    "local_rejected", f"{why}; {rejected} event(s) counted as rejected"
                )
            if self._closing:
                ledger.dropped += len(records)
                closed = bool(records)
            else:
                closed = False
                self._buffer_dropping_oldest(records)
        if closed:
            # No sender is left to report this, and shutdown is not the hot path.
            self._notes.warn("closed", f"{caller} after close(): the events are counted as dropped")

    def _buffer_dropping_oldest(self, records: list[bytes]) -> None:
        """Append ``records``, first dropping the oldest events beyond ``max_buffer``; lock held."""
        ledger, buffer = self._ledger, self._buffer
        before = len(buffer)
        overflow = before + len(records) - self._max_buffer
        if overflow > 0:
            # The oldest go first: from the buffer, then from the front of the new ones.
            from_buffer = min(overflow, before)
            for _ in range(from_buffer):
                buffer.popleft()
            records = records[overflow - from_buffer :]
            ledger.dropped += overflow
            ledger.overflowed += overflow
        buffer.extend(records)
        if len(buffer) >= self._batch_size:
            self._ready.set()

    def _wake(self) -> None:
        """Wake the sender: a batch is waiting. Checked after appending, by every caller.

        The length is read after the append, not before, so two threads that fill a batch
        together cannot both miss it.
        """
        ready = self._ready
        if not ready.is_set():
            ready.set()

    def _settle_late(self, caller: str, count: int) -> None:
        """Undo ``count`` appends made once ``close()`` had begun: take them back as dropped.

        Events logged after ``close()`` began are dropped, as ``close()`` documents, so that
        traffic still arriving cannot keep its drain going until the deadline. The fast path
        finds out after appending; it removes ``count`` events from the newest end. Those may
        be another thread's, appended just before, but exactly ``count`` events are counted
        dropped for ``count`` appended; any the sender has already taken are its to settle.
        """
        ledger, buffer = self._ledger, self._buffer
        with ledger.lock:
            late = min(count, len(buffer))
            for _ in range(late):
                buffer.pop()
            ledger.dropped += late
        self._notes.warn("closed", f"{caller} after close(): the events are counted as dropped")

    def _settle_locally(self, outcome: str, message: str, count: int = 1) -> None:
        ledger = self._ledger
        with ledger.lock:
            if outcome == "rejected":
                ledger.rejected += count
            else:
                ledger.dropped += count
            ledger.problems[outcome] = Problem(
                f"local_{outcome}", f"{message}; counted as {outcome}"
            )

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the background sender (a daemon thread); calling it again does nothing."""
        with self._ledger.lock:
            if self._closing:
                return
            self._sender.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, send what the sidecar takes within ``timeout`` s, count the rest dropped.

        Calling it again returns at once. Events still in flight when the deadline passes are
        counted as dropped even though the sidecar may yet receive them.
        """
        seconds = timeout if timeout >= 0 else 0.0  # NaN and negatives mean "no waiting"
        ledger = self._ledger
        with ledger.lock:
            if self._closing:
                return
            self._closing = True
            deadline = self._clock() + seconds
        self._sender.finish(deadline)
        with ledger.lock:
            # Popped and counted one by one, not cleared: an event a call appends meanwhile
            # stays for that call's _settle_late to count.
            buffer = self._buffer
            left = len(buffer)
            for _ in range(left):
                buffer.popleft()
            left += ledger.in_flight
            ledger.dropped += left
            ledger.in_flight = 0
            ledger.abandoned = True
        self._sender.report()
        if left:
            self._notes.warn(
                "shutdown", f"closed with {left} events undelivered after {seconds:g} s; dropped"
            )

    async def aclose(self, timeout: float = 5.0) -> None:
        """``close()`` in a worker thread, so an event loop keeps serving meanwhile."""
        await asyncio.to_thread(self.close, timeout)

    def stats(self) -> LoggerStats:
        """A consistent snapshot of the counts."""
        ledger = self._ledger
        with ledger.lock:
            buffered = len(self._buffer)
            return LoggerStats(
                logged=buffered
                + ledger.in_flight
                + ledger.sent
                + ledger.dropped
                + ledger.rejected
                + ledger.sampled_out,
                sampled_out=ledger.sampled_out,
                sent=ledger.sent,
                dropped=ledger.dropped,
                rejected=ledger.rejected,
                buffered=buffered,
                in_flight=ledger.in_flight,
            )

    def __enter__(self) -> PredictionLogger:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _with_model_fields(log: Log, model: str, version: str) -> Log:
    """``log`` with the model as structured fields, so a log search can filter on them.

    A structlog logger gets them bound; a stdlib logger gets them as record attributes (what
    a formatter with extras shows). Any other ``Log`` is used as given: the message text names
    the model either way.
    """
    fields = {"ml.model.name": model, "ml.model.version": version}
    if isinstance(log, logging.Logger):
        return logging.LoggerAdapter(log, fields)
    bind = getattr(log, "bind", None)
    if callable(bind):
        return cast(Log, bind(**fields))
    return log
