"""The prediction logger: how a model server sends every prediction to the modelwatch sidecar.

    logger = PredictionLogger(model="breast-cancer", version="3")
    logger.start()
    logger.log(features=row, prediction=label, latency_seconds=elapsed)

``log()`` never blocks and never raises into the prediction path: it encodes the event, appends
it to a bounded buffer under a lock and returns; ``log_many()`` does the same for all instances
of a request with one clock read and one lock round. One daemon thread sends batches (by count
and by time) to ``POST /v1/events``, retries with jittered backoff while the sidecar is slow, down
or restarting, and, when the buffer is full, drops the oldest events and counts each one. Every
logged event ends as exactly one of sent, dropped, rejected or sampled out. Standard library
only at import (``orjson`` when importable, ``prometheus_client`` only when a registry is
passed). The guide is ``docs/client.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, cast

from sidecar._client_arguments import check_arguments
from sidecar._client_delivery import Problem, deliver
from sidecar._client_encoding import EncodeError, dumps, encode_event, envelope
from sidecar._client_ids import new_event_id
from sidecar._client_throttle import Log, Throttle
from sidecar._client_transport import HttpTransport, TransportResponse

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "DEFAULT_URL",
    "Log",
    "LoggerStats",
    "PredictionLogger",
    "Transport",
    "TransportResponse",
    "new_event_id",
]

DEFAULT_URL = "http://127.0.0.1:8081"
BACKOFF_BASE_SECONDS = 0.1
"""First retry waits up to this long; each further failure doubles the cap, up to max_backoff."""
LOG_EVERY_SECONDS = 60.0
"""A problem is logged when first seen, then at most once per this period, with a count."""
_JOIN_GRACE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counts since construction.

    ``logged == sent + dropped + rejected + sampled_out + buffered + in_flight`` holds in every
    snapshot; after ``close()``, ``buffered`` and ``in_flight`` are 0.
    """

    logged: int
    sampled_out: int
    sent: int
    dropped: int
    rejected: int
    buffered: int
    in_flight: int


class Transport(Protocol):
    """Sends one ``POST /v1/events`` body; raises (anything) when there is no HTTP answer."""

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        """POST ``body`` and return the answer; ``timeout`` bounds the wait in seconds."""
        ...


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
        self._transport: Transport = HttpTransport(url, token) if transport is None else transport
        self._head, self._tail = envelope(model, version)
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._sample_rate = sample_rate
        self._sample_below = int(sample_rate * 2.0**64)
        self._timeout = timeout
        self._max_backoff = max_backoff
        self._clock = clock
        self._rng = random.Random() if rng is None else rng
        log: Log = logging.getLogger(__name__) if logger is None else logger
        self._notes = Throttle(
            _with_model_fields(log, model, version),
            clock,
            f"prediction logger ({model} {version}): ",
            LOG_EVERY_SECONDS,
        )
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._buffer: deque[bytes] = deque()
        self._logged = self._sampled_out = self._sent = self._dropped = self._rejected = 0
        self._in_flight = self._overflowed = self._overflow_reported = 0
        self._local: dict[str, Problem] = {}  # problems seen by log(), reported by the flusher
        self._closing = self._abandoned = False
        self._deadline = math.inf
        self._thread: threading.Thread | None = None
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
        other failure as dropped, and both are logged (by the flusher, once with context).
        """
        eid = event_id
        try:
            if self._sample_rate < 1.0 and not self._keep(event_id):
                with self._lock:
                    self._logged += 1
                    self._sampled_out += 1
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
            self._admit(data)
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
        latency, status, timestamp, trace id and attributes are shared. It takes the buffer's
        lock once and reads the clock once. The ids (None where sampled out), in row order.
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
            sampled_out = 0 if self._sample_rate >= 1.0 else self._sample(ids, event_ids is None)
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
            with self._lock:
                buffer = self._buffer
                before = len(buffer)
                if (
                    sampled_out
                    or rejected
                    or self._closing
                    or before + len(records) > self._max_buffer
                ):
                    closed = self._admit_many(records, sampled_out, rejected, problem)
                else:
                    # The common case, kept inline: everything fits and nothing else to count.
                    self._logged += len(records)
                    buffer.extend(records)
                    if before < self._batch_size <= len(buffer):
                        self._wake.notify()
                    return ids
            if closed:
                self._notes.warn(
                    "closed", "log_many() after close(): the events are counted as dropped"
                )
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
        options can write, a full buffer, a closed logger) goes the long way, which then
        decides and counts exactly as it does for any call.
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
        with self._lock:
            buffer = self._buffer
            if self._closing or len(buffer) >= self._max_buffer:
                return None
            self._logged += 1
            buffer.append(data)
            if len(buffer) == self._batch_size:
                self._wake.notify()
        return [eid]

    def _sample(self, ids: list[str | None], generated: bool) -> int:
        """Set the ids of the rows sampled out to None; how many they are."""
        sampled_out = 0
        for i, eid in enumerate(ids):
            if not self._keep(None if generated else eid):
                ids[i] = None
                sampled_out += 1
        return sampled_out

    def _keep(self, event_id: str | None) -> bool:
        if event_id is None:
            return self._rng.random() < self._sample_rate
        digest = hashlib.blake2b(str(event_id).encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") < self._sample_below

    def _admit(self, data: bytes) -> None:
        with self._lock:
            if not self._closing:
                buffer = self._buffer
                if len(buffer) >= self._max_buffer:
                    buffer.popleft()
                    self._dropped += 1
                    self._overflowed += 1
                buffer.append(data)
                self._logged += 1
                if len(buffer) == self._batch_size:
                    self._wake.notify()
                return
            self._logged += 1
            self._dropped += 1
        # No flusher is left to report this, and shutdown is not the hot path.
        self._notes.warn("closed", "log() after close(): the event is counted as dropped")

    def _admit_many(self, records: list[bytes], sampled_out: int, rejected: int, why: str) -> bool:
        """Count and buffer one call's events, the lock held; whether it came after close()."""
        self._logged += len(records) + sampled_out + rejected
        self._sampled_out += sampled_out
        if rejected:
            self._rejected += rejected
            self._local["rejected"] = Problem(
                "local_rejected", f"{why}; {rejected} event(s) counted as rejected"
            )
        if self._closing:
            self._dropped += len(records)
            return bool(records)
        buffer = self._buffer
        before = len(buffer)
        overflow = before + len(records) - self._max_buffer
        if overflow > 0:
            # The oldest go first: from the buffer, then from the front of the new ones.
            from_buffer = min(overflow, before)
            for _ in range(from_buffer):
                buffer.popleft()
            records = records[overflow - from_buffer :]
            self._dropped += overflow
            self._overflowed += overflow
        buffer.extend(records)
        if len(buffer) >= self._batch_size > before:
            self._wake.notify()
        return False

    def _settle_locally(self, outcome: str, message: str, count: int = 1) -> None:
        with self._lock:
            self._logged += count
            if outcome == "rejected":
                self._rejected += count
            else:
                self._dropped += count
            self._local[outcome] = Problem(f"local_{outcome}", f"{message}; counted as {outcome}")

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the background flusher (a daemon thread); calling it again does nothing."""
        with self._lock:
            if self._thread is not None or self._closing:
                return
            self._thread = threading.Thread(
                target=self._run, name="modelwatch-prediction-logger", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, send what the sidecar takes within ``timeout`` s, count the rest dropped.

        Calling it again returns at once. Events still in flight when the deadline passes are
        counted as dropped even though the sidecar may yet receive them.
        """
        seconds = timeout if timeout >= 0 else 0.0  # NaN and negatives mean "no waiting"
        with self._lock:
            if not self._closing:
                self._closing = True
                self._deadline = self._clock() + seconds
            thread = self._thread
            self._wake.notify_all()
        self._stop.set()
        if thread is None:
            self._drain(0)
            self._close_transport()
        else:
            remaining = self._deadline - self._clock()
            thread.join(None if math.isinf(remaining) else max(remaining, 0) + _JOIN_GRACE_SECONDS)
        with self._lock:
            left = len(self._buffer) + self._in_flight
            self._dropped += left
            self._buffer.clear()
            self._in_flight = 0
            self._abandoned = True
        self._report()
        if left:
            self._notes.warn(
                "shutdown", f"closed with {left} events undelivered after {seconds:g} s; dropped"
            )

    async def aclose(self, timeout: float = 5.0) -> None:
        """``close()`` in a worker thread, so an event loop keeps serving meanwhile."""
        await asyncio.to_thread(self.close, timeout)

    def stats(self) -> LoggerStats:
        """A consistent snapshot of the counts."""
        with self._lock:
            return LoggerStats(
                logged=self._logged,
                sampled_out=self._sampled_out,
                sent=self._sent,
                dropped=self._dropped,
                rejected=self._rejected,
                buffered=len(self._buffer),
                in_flight=self._in_flight,
            )

    def __enter__(self) -> PredictionLogger:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the flusher thread

    def _run(self) -> None:
        failures = 0
        last_take = self._clock()
        while True:
            try:
                batch = self._next_batch(last_take)
                if batch is None:
                    break
                last_take = self._clock()
                failures = self._attempt(batch, self._timeout, failures)
                self._report()
                if failures:
                    self._stop.wait(self._backoff(failures))
            except Exception as exc:  # a bug here must not end delivery for the process
                self._notes.warn("internal", f"flusher error: {type(exc).__name__}: {exc}")
                self._stop.wait(self._max_backoff)
        self._drain(failures)
        self._close_transport()

    def _next_batch(self, last_take: float) -> list[bytes] | None:
        """The next batch once ``batch_size`` events wait or ``flush_interval`` has passed."""
        with self._wake:
            while not self._closing:
                waiting = len(self._buffer)
                if waiting >= self._batch_size:
                    return self._take()
                due = last_take + self._flush_interval - self._clock()
                if waiting and due <= 0:
                    return self._take()
                self._wake.wait(due if due > 0 else self._flush_interval)
            return None

    def _take(self) -> list[bytes]:
        buffer = self._buffer
        batch = [buffer.popleft() for _ in range(min(self._batch_size, len(buffer)))]
        self._in_flight += len(batch)
        return batch

    def _attempt(self, batch: list[bytes], timeout: float, failures: int) -> int:
        """Send ``batch`` and count what became of it; the new count of consecutive failures."""
        result = deliver(self._transport.send, self._head, self._tail, batch, timeout)
        with self._lock:
            if self._abandoned:  # close() gave up waiting and counted these as dropped
                return failures
            self._in_flight -= len(batch)
            self._sent += result.sent
            self._rejected += result.rejected
            if result.retry:
                # Back at the front, in order, so the oldest events are the first dropped.
                self._buffer.extendleft(reversed(result.retry))
                while len(self._buffer) > self._max_buffer:
                    self._buffer.popleft()
                    self._dropped += 1
                    self._overflowed += 1
        for problem in result.problems:
            self._notes.warn(problem.kind, problem.message)
        if result.retry:
            return failures + 1
        if failures:
            self._notes.info(f"the sidecar answers again after {failures} failed attempts")
        return 0

    def _drain(self, failures: int) -> None:
        """Send what is buffered until the close deadline; never wait past it."""
        while True:
            with self._lock:
                remaining = self._deadline - self._clock()
                if self._abandoned or not self._buffer or remaining <= 0:
                    return
                batch = self._take()
            failures = self._attempt(batch, min(self._timeout, remaining), failures)
            if failures:
                pause = min(self._backoff(failures), self._deadline - self._clock())
                if pause > 0:
                    time.sleep(pause)

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, base * 2**(failures - 1)))."""
        cap = min(self._max_backoff, BACKOFF_BASE_SECONDS * 2.0 ** min(failures - 1, 40))
        return cap * self._rng.random()

    def _report(self) -> None:
        """Log what log() and the buffer saw since the last report, off the prediction path."""
        with self._lock:
            overflowed = self._overflowed - self._overflow_reported
            self._overflow_reported = self._overflowed
            local, self._local = self._local, {}
        if overflowed:
            self._notes.warn(
                "overflow",
                f"buffer full ({self._max_buffer} events): dropped the {overflowed} oldest "
                "events; the sidecar is slow or unreachable",
            )
        for problem in local.values():
            self._notes.warn(problem.kind, problem.message)

    def _close_transport(self) -> None:
        close = getattr(self._transport, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                self._notes.warn("internal", f"closing the transport: {exc!r}")


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
