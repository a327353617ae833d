"""The model server's own Prometheus metrics: names, labels and buckets in one place.

Every series carries the ``model`` and ``version`` labels (one model per process, so they add
no cardinality) and every other label is bounded: ``route`` is the route template (never the raw
path), ``method`` and ``code`` come from small sets, ``status`` is ``ok`` or ``error``. Known
series exist at zero from start-up. The prediction logger adds its own series
(``modelwatch_logger_*``) to the same registry. The reference is in ``docs/serving.md``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from serving.batcher import BatchObserver

NAMESPACE = "modelwatch_serving"
UNMATCHED_ROUTE = "unmatched"
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
MODEL_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STATUSES = ("ok", "error")
FEEDBACK_OUTCOMES = ("forwarded", "failed")


class ServingMetrics(BatchObserver):
    """The server's metrics for one model version, registered on ``registry``."""

    def __init__(
        self, registry: CollectorRegistry, *, model: str, version: str, process: bool = True
    ) -> None:
        self.registry = registry
        ids = ("model", "version")
        self._ids = (model, version)
        self._requests = Histogram(
            "request_duration_seconds",
            "HTTP request latency by route template, method and status code.",
            [*ids, "route", "method", "code"],
            namespace=NAMESPACE,
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "requests_in_flight",
            "HTTP requests being served now.",
            ids,
            namespace=NAMESPACE,
            registry=registry,
        ).labels(*self._ids)
        self._batch_size = Histogram(
            "batch_size",
            "Instances per model call (micro-batch size).",
            ids,
            namespace=NAMESPACE,
            buckets=BATCH_BUCKETS,
            registry=registry,
        ).labels(*self._ids)
        self._batch_requests = Histogram(
            "batch_requests",
            "Requests grouped into one model call.",
            ids,
            namespace=NAMESPACE,
            buckets=BATCH_BUCKETS,
            registry=registry,
        ).labels(*self._ids)
        self._queue_depth = Gauge(
            "queue_depth",
            "Requests waiting for a micro-batch.",
            ids,
            namespace=NAMESPACE,
            registry=registry,
        ).labels(*self._ids)
        self.model_duration = Histogram(
            "model_duration_seconds",
            "Time spent waiting for and in the model, per request (queue wait included).",
            ids,
            namespace=NAMESPACE,
            buckets=MODEL_BUCKETS,
            registry=registry,
        ).labels(*self._ids)
        predictions = Counter(
            "predictions",
            "Instances scored, by outcome.",
            [*ids, "status"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._predictions = {s: predictions.labels(*self._ids, s) for s in STATUSES}
        feedback = Counter(
            "feedback_labels",
            "Ground-truth labels received for the sidecar, by whether forwarding succeeded.",
            [*ids, "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._feedback = {o: feedback.labels(*self._ids, o) for o in FEEDBACK_OUTCOMES}
        self._ready = Gauge(
            "model_ready",
            "1 once the model is loaded and serving, else 0.",
            ids,
            namespace=NAMESPACE,
            registry=registry,
        ).labels(*self._ids)
        self._info = Gauge(
            "model_info",
            "The model being served (always 1); provider is the ONNX Runtime execution provider.",
            [*ids, "provider"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._route_children: dict[tuple[str, str, str], Histogram] = {}
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    # ----------------------------------------------------------------- HTTP

    def request_started(self) -> None:
        """A request came in."""
        self._in_flight.inc()

    def request_finished(self, route: str, method: str, code: int, seconds: float) -> None:
        """A request was answered with ``code`` after ``seconds``."""
        self._in_flight.dec()
        key = (route, method, str(code))
        child = self._route_children.get(key)
        if child is None:
            child = self._requests.labels(*self._ids, *key)
            self._route_children[key] = child
        child.observe(seconds)

    # ----------------------------------------------------------------- model

    def loaded(self, provider: str) -> None:
        """The model is ready, running on ``provider``."""
        self._info.labels(*self._ids, provider).set(1)
        self._ready.set(1)

    def unready(self) -> None:
        """The model stopped serving (shutdown)."""
        self._ready.set(0)

    def predictions(self, status: str, count: int) -> None:
        """``count`` instances finished with ``status`` (``ok`` or ``error``)."""
        self._predictions[status].inc(count)

    def feedback(self, outcome: str, count: int) -> None:
        """``count`` labels were forwarded to the sidecar or failed to be."""
        self._feedback[outcome].inc(count)

    # ----------------------------------------------------------------- BatchObserver

    def batch(self, instances: int, requests: int) -> None:
        """One model call over ``instances`` rows from ``requests`` requests."""
        self._batch_size.observe(instances)
        self._batch_requests.observe(requests)

    def queue_depth(self, requests: int) -> None:
        """Requests now waiting for a batch."""
        self._queue_depth.set(requests)
