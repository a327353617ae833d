"""The model server's FastAPI app: KServe V1 predict, metadata, feedback, health and metrics.

``create_app`` wires validated settings, the model's metadata, a model loader, the prediction
log and a metrics registry into one app. Its lifespan starts the prediction log and loads the
model once, on a thread, while the server already answers ``/healthz`` (alive) and ``/readyz``
(503 until the model is loaded); a model that fails to load calls ``on_load_failed`` so the
process exits instead of staying half alive. On shutdown it stops taking predictions, lets
queued batches finish, and flushes the prediction log within a deadline.

The predict route never blocks the event loop (the model runs on the batcher's worker thread)
and never waits on the sidecar (``PredictionLog.log_many`` only encodes and enqueues).

The routes are plain Starlette routes taking the ``Request``: every body is decoded and checked
by ``serving.instances``, so FastAPI's per-request parameter solving and validation would only
add cost (about a tenth of a request's CPU time on the benchmark's one-instance requests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope
from structlog.typing import FilteringBoundLogger

from serving.batcher import BatcherClosedError, MicroBatcher
from serving.errors import ModelLoadError, PredictionError, RequestError
from serving.feedback import FeedbackForwarder, parse_labels
from serving.instances import InstanceDecoder
from serving.metadata import ModelMetadata
from serving.metrics import ServingMetrics
from serving.middleware import RequestContextMiddleware, current_context
from serving.model import Model, Outputs
from serving.prediction_log import PredictionLog
from serving.settings import ServingSettings
from sidecar._client_ids import new_event_id

SHUTDOWN_DRAIN_SECONDS = 10.0
"""How long queued batches may take to finish after SIGTERM."""
LOG_FLUSH_SECONDS = 5.0
"""How long the prediction log may take to flush after SIGTERM."""
JSON = "application/json"
_VERBS = (":predict", ":feedback")
"""The ``{name}:verb`` routes; ``/v1/models/{name}`` must not take them as a model name."""


class ServableModel(Model, Protocol):
    """A model and the execution provider it runs on (``CPUExecutionProvider``, …)."""

    provider: str


@dataclass(slots=True)
class _State:
    ready: bool = False
    phase: str = "loading"
    batcher: MicroBatcher | None = None
    provider: str | None = None
    load_task: asyncio.Task[None] | None = field(default=None, repr=False)


def create_app(
    settings: ServingSettings,
    metadata: ModelMetadata,
    *,
    load_model: Callable[[], ServableModel],
    prediction_log: PredictionLog,
    registry: CollectorRegistry,
    logger: FilteringBoundLogger,
    feedback: FeedbackForwarder | None = None,
    on_load_failed: Callable[[BaseException], None] | None = None,
    process_metrics: bool = True,
) -> FastAPI:
    """The app for one model; ``load_model`` runs once, on a thread, when the app starts."""
    metrics = ServingMetrics(
        registry, model=metadata.name, version=metadata.version, process=process_metrics
    )
    state = _State()
    log = logger.bind(**{"ml.model.name": metadata.name, "ml.model.version": metadata.version})
    forwarder = feedback or FeedbackForwarder(
        settings.sidecar_url,
        model=metadata.name,
        version=metadata.version,
        token=settings.ingest_token,
        timeout=settings.feedback_timeout_seconds,
    )
    routes = _Routes(settings, metadata, state, metrics, prediction_log, forwarder, log)

    async def load() -> None:
        try:
            model = await asyncio.to_thread(load_model)
        except Exception as exc:  # a loader may raise anything; all of it means "cannot serve"
            state.phase = "failed"
            fields = (
                {"reason": exc.reason, "field": exc.field}
                if isinstance(exc, ModelLoadError)
                else {}
            )
            log.error("model failed to load", error=str(exc), **fields)
            if on_load_failed is not None:
                on_load_failed(exc)
            return
        batcher = MicroBatcher(
            model,
            max_batch_size=settings.max_batch_size,
            max_wait_seconds=settings.max_wait_seconds,
            observer=metrics,
        )
        batcher.start()
        state.batcher = batcher
        state.provider = model.provider
        state.ready = True
        state.phase = "ready"
        metrics.loaded(model.provider)
        log.info("model loaded", provider=model.provider, features=len(metadata.features))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        prediction_log.start()
        state.load_task = asyncio.create_task(load(), name="model-load")
        try:
            yield
        finally:
            state.ready = False
            state.phase = "stopping"
            metrics.unready()
            await _shutdown(state, prediction_log, forwarder, log)

    app = FastAPI(
        title="modelwatch model server",
        version=metadata.version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        model=metadata.name,
        version=metadata.version,
    )
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.router.routes.extend(
        [
            _Route("/v1/models/{name}:predict", routes.predict, methods=["POST"]),
            _Route("/v1/models/{name}:feedback", routes.feedback, methods=["POST"]),
            _Route("/v1/models/{name}", routes.model, methods=["GET"], verbs=_VERBS),
            _Route("/v1/models", routes.models, methods=["GET"]),
            _Route("/healthz", routes.healthz, methods=["GET"]),
            _Route("/readyz", routes.readyz, methods=["GET"]),
            _Route("/metrics", routes.metrics, methods=["GET"]),
        ]
    )
    app.state.serving = state
    return app


class _Route(Route):
    """A plain Starlette route that names itself in the scope (``scope["route"]``).

    The metrics middleware labels requests by ``scope["route"].path``; FastAPI's router leaves
    that key to its own route class, so a plain route sets it when it matches.

    ``verbs`` are suffixes its ``{name}`` must not end with: ``GET /v1/models/m:predict`` is
    a wrong method on the predict route (405 with ``Allow``), not metadata of model
    ``m:predict``. Without them Starlette's ``{name}`` (anything but ``/``) would take it.
    """

    def __init__(self, *args: Any, verbs: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verbs = verbs

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, plus this route in the child scope when it matches at all."""
        match, child = super().matches(scope)
        if match is Match.NONE:
            return match, child
        if self._verbs and str(child["path_params"].get("name", "")).endswith(self._verbs):
            return Match.NONE, {}
        child["route"] = self
        return match, child


class _Routes:
    """The route handlers, sharing the app's dependencies."""

    def __init__(
        self,
        settings: ServingSettings,
        metadata: ModelMetadata,
        state: _State,
        metrics: ServingMetrics,
        prediction_log: PredictionLog,
        forwarder: FeedbackForwarder,
        logger: FilteringBoundLogger,
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._state = state
        self._metrics = metrics
        self._log = prediction_log
        self._forwarder = forwarder
        self._logger = logger
        self._decoder = InstanceDecoder(metadata, max_instances=settings.max_instances)
        self._class_keys = [str(c) for c in metadata.classes]

    async def predict(self, request: Request) -> Response:
        """``POST /v1/models/{name}:predict``: score every instance, log each one."""
        self._check_name(request)
        batcher = self._ready_batcher()
        decoded = self._decoder.decode(await self._body(request))
        count = decoded.count
        started = time.perf_counter()
        try:
            outputs = await batcher.submit(decoded.inputs, count)
        except BatcherClosedError:
            raise _unavailable("the model server is shutting down") from None
        except PredictionError as exc:
            self._failed(decoded.features, time.perf_counter() - started, str(exc))
            raise RequestError(
                500, "model_error", "", f"the model failed on this request: {exc}"
            ) from None
        latency = time.perf_counter() - started
        non_finite = _non_finite(outputs)
        if non_finite is not None:
            index, message = non_finite
            self._failed(decoded.features, latency, f"instances[{index}]: {message}")
            raise RequestError(422, "non_finite_output", f"instances[{index}]", message)
        self._metrics.model_duration.observe(latency)
        self._metrics.predictions("ok", count)
        context = current_context()
        predictions = outputs.predictions.tolist()
        ids = [new_event_id() for _ in range(count)]
        answer: dict[str, Any] = {"predictions": predictions, "ids": ids}
        scores: list[dict[str, float]] | None = None
        if outputs.scores is not None:
            keys = self._class_keys
            scores = [dict(zip(keys, row, strict=True)) for row in outputs.scores.tolist()]
            answer["scores"] = scores
        self._log.log_many(
            features=decoded.features,
            predictions=predictions,
            latency_seconds=latency,
            event_ids=ids,
            scores=scores,
            trace_id=context.trace_id,
            attributes={"request_id": context.request_id},
        )
        return Response(orjson.dumps(answer), media_type=JSON)

    async def feedback(self, request: Request) -> Response:
        """``POST /v1/models/{name}:feedback``: forward ground-truth labels to the sidecar."""
        self._check_name(request)
        labels = parse_labels(await self._body(request), max_labels=self._settings.max_instances)
        try:
            status, body = await self._forwarder.forward(labels)
        except RequestError as exc:
            self._metrics.feedback("failed", len(labels))
            self._logger.warning("feedback not forwarded", error=str(exc), labels=len(labels))
            raise
        self._metrics.feedback("forwarded", len(labels))
        return Response(body, status_code=status, media_type=JSON)

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{name}``: the metadata and whether the model is ready."""
        self._check_name(request)
        body = {
            **self._metadata.to_dict(),
            "ready": self._state.ready,
            "provider": self._state.provider,
            "max_instances": self._settings.max_instances,
        }
        return Response(orjson.dumps(body), media_type=JSON)

    async def models(self, _: Request) -> Response:
        """``GET /v1/models``: the one model this server serves."""
        return Response(orjson.dumps({"models": [self._metadata.name]}), media_type=JSON)

    async def healthz(self, _: Request) -> Response:
        """``GET /healthz``: the process is alive (it says nothing about the model)."""
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def readyz(self, _: Request) -> Response:
        """``GET /readyz``: 200 once the model is loaded; 503 before, after failure, stopping."""
        state = self._state
        body = orjson.dumps({"ready": state.ready, "status": state.phase})
        return Response(body, status_code=200 if state.ready else 503, media_type=JSON)

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: the server's Prometheus metrics."""
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self._metrics.registry), headers={"Content-Type": content_type})

    # ----------------------------------------------------------------- helpers

    def _check_name(self, request: Request) -> None:
        name = request.path_params["name"]
        if name != self._metadata.name:
            raise RequestError(
                404,
                "unknown_model",
                "name",
                f"this server serves model {self._metadata.name!r}, not {name!r}",
            )

    def _ready_batcher(self) -> MicroBatcher:
        batcher = self._state.batcher
        if not self._state.ready or batcher is None:
            raise _unavailable(f"the model is not ready ({self._state.phase})")
        return batcher

    async def _body(self, request: Request) -> bytes:
        """The body, read chunk by chunk and refused as soon as it passes the limit.

        A declared ``Content-Length`` over the limit is refused before reading; a chunked
        body (no length) is refused at the chunk that crosses it, so at most the limit plus
        one chunk is ever held.
        """
        limit = self._settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(f"is {int(declared)} bytes", limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(f"is over {limit} bytes (read {size} so far)", limit)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _failed(self, features: list[dict[str, Any]], latency: float, reason: str) -> None:
        self._metrics.predictions("error", len(features))
        self._logger.warning("prediction failed", error=reason, instances=len(features))
        context = current_context()
        self._log.log_many(
            features=features,
            predictions=[None] * len(features),
            latency_seconds=latency,
            status="error",
            trace_id=context.trace_id,
            attributes={"error": reason, "request_id": context.request_id},
        )


async def _shutdown(
    state: _State,
    prediction_log: PredictionLog,
    forwarder: FeedbackForwarder,
    log: FilteringBoundLogger,
) -> None:
    if state.load_task is not None and not state.load_task.done():
        state.load_task.cancel()
    if state.batcher is not None and not await state.batcher.aclose(SHUTDOWN_DRAIN_SECONDS):
        log.warning("queued predictions were not all scored before the drain deadline")
    try:
        await asyncio.wait_for(prediction_log.aclose(LOG_FLUSH_SECONDS), LOG_FLUSH_SECONDS + 1.0)
    except TimeoutError:
        log.warning("the prediction log did not close within its deadline")
    await forwarder.aclose()


def _unavailable(message: str) -> RequestError:
    return RequestError(503, "not_ready", "", message)


def _too_large(size: str, limit: int) -> RequestError:
    return RequestError(413, "body_too_large", "", f"the body {size}; at most {limit}")


def _non_finite(outputs: Outputs) -> tuple[int, str] | None:
    """The first instance whose prediction or scores are NaN or infinite, and why; else None.

    An input near its dtype's limit (every feature at 3.4e38, say) can overflow inside the
    model; its answer would be JSON ``null`` in place of a number, which looks like success.
    """
    rows = len(outputs)
    bad = np.zeros(rows, dtype=bool)
    parts: list[tuple[str, Any]] = []
    predictions = outputs.predictions
    if predictions.dtype.kind in "fc" and not np.isfinite(predictions).all():
        parts.append(("prediction", ~np.isfinite(predictions)))
    scores = outputs.scores
    if scores is not None and scores.dtype.kind in "fc" and not np.isfinite(scores).all():
        parts.append(("scores", (~np.isfinite(scores.reshape(rows, -1))).any(axis=1)))
    if not parts:
        return None
    for _, rows_bad in parts:
        bad |= rows_bad
    index = int(np.argmax(bad))
    which = " and ".join(name for name, rows_bad in parts if rows_bad[index])
    others = int(bad.sum()) - 1
    also = f"; {others} other instance(s) of this request too" if others else ""
    return index, (
        f"the model's {which} for this instance is not finite (NaN or infinity): its values "
        f"overflow the model{also}"
    )


async def _request_error(_: Request, exc: RequestError) -> Response:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return Response(orjson.dumps(exc.to_json()), exc.status, headers=headers, media_type=JSON)


async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = {"error": str(exc.detail), "field": "", "reason": reason}
    return Response(orjson.dumps(body), exc.status_code, headers=exc.headers, media_type=JSON)
