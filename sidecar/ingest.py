"""The sidecar's ingest API: a Starlette app taking prediction events and feedback labels.

Nothing a client sends may produce a 5xx or kill the process: every refusal is a JSON 4xx that
names the field and the reason, and is counted in ``IngestCounters``. The only 5xx answers are
``/readyz``'s 503 (no model loaded: a fault of the sidecar's setup, not of the request) and the
last-resort 500 that turns an unexpected bug into one logged error instead of a dropped
connection. A whole-request refusal is logged once per request; problems inside a batch are
logged the first time each kind is seen, then summarised at most once a minute (a client that
repeats the same mistake in every batch must not flood the log); accepted events never are.
The routes, bodies and codes are documented in ``docs/wire-format.md`` and served as OpenAPI
from ``sidecar.openapi``; keep the three in step.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.typing import FilteringBoundLogger

from sidecar._problem_log import ProblemLog
from sidecar.columns import EventColumns
from sidecar.counters import IngestCounters
from sidecar.events import (
    IngestLimits,
    ParsedEvents,
    RequestRejected,
    parse_events,
    parse_feedback,
)
from sidecar.feedback import FeedbackStore
from sidecar.openapi import openapi_document
from sidecar.profile import CategoricalProfile, FeatureProfile, Profile
from sidecar.snapshot import DriftSnapshot, FeatureDrift

JSON = "application/json"

DEFAULT_BODY_TIMEOUT_SECONDS = 30.0
"""How long a client may take to send a whole request body before it is answered 408."""

_REFUSAL_HEADERS: dict[int, Mapping[str, str]] = {
    401: {"WWW-Authenticate": "Bearer"},
    # The body was not read to its end, so the connection cannot carry another request.
    408: {"Connection": "close"},
}


class Monitor(Protocol):
    """What the ingest app needs of one model version's drift monitor."""

    @property
    def profile(self) -> Profile:
        """The reference profile events are validated against."""
        ...

    def observe(self, batch: EventColumns, /) -> object:
        """Add one batch of accepted events to the monitor's windows and counters."""
        ...

    def drift(self) -> DriftSnapshot:
        """Every drift statistic over the current window."""
        ...


class Monitors(Protocol):
    """What the ingest app needs of the registry of monitors (``sidecar.monitors``)."""

    def get(self, model: str, version: str, /) -> Monitor | None:
        """The monitor of ``model``/``version``, or None when it is not served."""
        ...

    def models(self) -> Mapping[str, Sequence[str]]:
        """Every served model and its versions."""
        ...


@dataclass(frozen=True, slots=True)
class _Deps:
    monitors: Monitors
    counters: IngestCounters
    feedback: FeedbackStore
    limits: IngestLimits
    token: bytes | None
    logger: FilteringBoundLogger
    on_accepted: Callable[[ParsedEvents], None] | None
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    body_timeout_seconds: float
    problems: ProblemLog


def create_ingest_app(
    *,
    monitors: Monitors,
    counters: IngestCounters,
    feedback: FeedbackStore,
    limits: IngestLimits,
    token: str | None,
    logger: FilteringBoundLogger,
    on_accepted: Callable[[ParsedEvents], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS,
) -> Starlette:
    """The ingest ASGI app; ``token`` (when set) is required as ``Authorization: Bearer``.

    ``on_accepted`` is called with every request's parsed events before the answer is sent
    (the spool writer hooks in here), once the monitor has observed them. ``clock`` must be the
    monitors' clock (their ``computed_at`` is read on it); ``wall_clock`` gives the epoch
    seconds shown in ``/v1/drift``. A body not received within ``body_timeout_seconds`` is
    answered 408.
    """
    if not (math.isfinite(body_timeout_seconds) and body_timeout_seconds > 0):
        raise ValueError(
            f"body_timeout_seconds: must be a positive number, got {body_timeout_seconds}"
        )
    deps = _Deps(
        monitors=monitors,
        counters=counters,
        feedback=feedback,
        limits=limits,
        token=None if token is None else token.encode(),
        logger=logger,
        on_accepted=on_accepted,
        clock=clock,
        wall_clock=wall_clock,
        body_timeout_seconds=body_timeout_seconds,
        problems=ProblemLog(logger, clock),
    )
    document = orjson.dumps(openapi_document(limits))

    async def openapi(_: Request) -> Response:
        return Response(document, media_type=JSON)

    routes = [
        Route("/v1/events", _guard(deps, _post_events), methods=["POST"]),
        Route("/v1/feedback", _guard(deps, _post_feedback), methods=["POST"]),
        Route("/v1/drift", _guard(deps, _get_drift), methods=["GET"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _guard(deps, _readyz), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _http_error,
            Exception: _last_resort(logger),
        },
    )


# --------------------------------------------------------------------------- plumbing


def _json(content: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type=JSON)


def _error(
    status: int,
    reason: str,
    field: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {"error": {"status": status, "reason": reason, "field": field, "message": message}}
    return _json(body, status, headers)


_Handler = Callable[[_Deps, Request], Awaitable[Response]]


def _guard(deps: _Deps, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler``: refusals become counted, logged 4xx; a bug becomes a logged 500."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(deps, request)
        except RequestRejected as refused:
            if request.method == "POST":
                deps.counters.reject_request(refused.reason)
            deps.logger.warning(
                "request_rejected",
                path=request.url.path,
                status=refused.status,
                reason=refused.reason,
                field=refused.field,
                message=refused.message,
            )
            headers = _REFUSAL_HEADERS.get(refused.status)
            return _error(refused.status, refused.reason, refused.field, refused.message, headers)
        except ClientDisconnect:
            # Nobody is left to answer; nothing was ingested.
            deps.logger.info("client_disconnected", path=request.url.path)
            return Response(status_code=400)
        except Exception:
            deps.logger.exception("ingest_bug", path=request.url.path, method=request.method)
            return _error(500, "internal_error", "", "unexpected error; see the sidecar's log")

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - Starlette routes only these here
    if exc.status_code == 405:
        allowed = exc.headers.get("Allow", "") if exc.headers else ""
        return _error(
            405,
            "method_not_allowed",
            "method",
            f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}",
            exc.headers,
        )
    if exc.status_code == 404:
        return _error(404, "not_found", "path", f"no route {request.url.path}")
    return _error(exc.status_code, "http_error", "", str(exc.detail), exc.headers)


def _last_resort(
    logger: FilteringBoundLogger,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        logger.error("ingest_bug", path=request.url.path, exc_info=exc)
        return _error(500, "internal_error", "", "unexpected error; see the sidecar's log")

    return handler


def _authorise(deps: _Deps, request: Request) -> None:
    if deps.token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credential.strip().encode(), deps.token
    ):
        raise RequestRejected(
            401,
            "unauthorized",
            "Authorization",
            "a valid 'Authorization: Bearer <token>' is required",
        )


async def _read_json_body(deps: _Deps, request: Request) -> bytes:
    """The request body, refused as soon as it is known to be too large or not plain JSON."""
    _authorise(deps, request)
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != JSON:
        raise RequestRejected(
            415,
            "unsupported_media_type",
            "Content-Type",
            f"must be {JSON}, got {media_type or 'nothing'!r}",
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise RequestRejected(
            415, "unsupported_media_type", "Content-Encoding", f"{encoding!r} is not accepted"
        )
    limit = deps.limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestRejected(400, "invalid_body", "Content-Length", "must be an integer")
        if int(declared) > limit:
            raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    timeout = deps.body_timeout_seconds
    try:
        # One deadline for the whole body, not per chunk: a client dripping a byte at a time
        # must not hold a connection and a buffer open forever.
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit)
                chunks.append(chunk)
    except TimeoutError:
        expected = f"of {declared} " if declared is not None else ""
        raise RequestRejected(
            408,
            "timeout",
            "body",
            f"the body did not arrive within {timeout:g} seconds ({size} bytes {expected}received)",
        ) from None
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> RequestRejected:
    return RequestRejected(
        413,
        "too_large",
        "body",
        f"body of at least {size} bytes exceeds the limit of {limit} bytes",
    )


def _lookup(deps: _Deps) -> Callable[[str, str], Profile | None]:
    def lookup(model: str, version: str) -> Profile | None:
        monitor = deps.monitors.get(model, version)
        return None if monitor is None else monitor.profile

    return lookup


# --------------------------------------------------------------------------- routes


async def _post_events(deps: _Deps, request: Request) -> Response:
    body = await _read_json_body(deps, request)
    parsed = parse_events(body, _lookup(deps), deps.limits, catalogue=deps.monitors.models)
    monitor = deps.monitors.get(parsed.model, parsed.version)
    if monitor is None:  # unloaded between parse and now; treat like any unknown model
        raise RequestRejected(404, "unknown_model", "model", "model version is no longer served")
    columns = parsed.columns
    if columns.n:
        monitor.observe(columns)
        if columns.prediction is not None:
            deps.feedback.remember(parsed.model, parsed.version, columns.ids, columns.prediction)
        if deps.on_accepted is not None:
            deps.on_accepted(parsed)
    counters = deps.counters
    counters.events_received += parsed.received
    counters.events_accepted += parsed.accepted
    reasons = Counter(r.reason for r in parsed.rejections)
    for reason, n in reasons.items():
        counters.reject_event(reason, n)
    if parsed.rejections or parsed.warnings or parsed.warnings_dropped:
        deps.problems.record(parsed)
    return _json(
        {
            "accepted": parsed.accepted,
            "rejected": [r.to_json() for r in parsed.rejections],
            "warnings": [w.to_json() for w in parsed.warnings],
            "warnings_dropped": parsed.warnings_dropped,
        },
        202,
    )


async def _post_feedback(deps: _Deps, request: Request) -> Response:
    body = await _read_json_body(deps, request)
    parsed = parse_feedback(body, _lookup(deps), deps.limits, catalogue=deps.monitors.models)
    joined, unmatched = deps.feedback.label(
        parsed.model, parsed.version, list(zip(parsed.ids, parsed.labels, strict=True))
    )
    counters = deps.counters
    counters.feedback("joined", joined)
    counters.feedback("unmatched", unmatched)
    counters.feedback("rejected", len(parsed.rejections))
    if parsed.rejections:
        deps.logger.warning(
            "labels_rejected",
            model=parsed.model,
            version=parsed.version,
            received=parsed.received,
            rejected=len(parsed.rejections),
            reasons=dict(Counter(r.reason for r in parsed.rejections)),
            first_error=parsed.rejections[0].to_json()["error"],
        )
    return _json(
        {
            "joined": joined,
            "unmatched": unmatched,
            "rejected": [r.to_json() for r in parsed.rejections],
        },
        202,
    )


async def _get_drift(deps: _Deps, request: Request) -> Response:
    _authorise(deps, request)
    model = request.query_params.get("model")
    version = request.query_params.get("version")
    catalogue = deps.monitors.models()
    if model is not None and model not in catalogue:
        known = ", ".join(repr(m) for m in sorted(catalogue)) or "none"
        raise RequestRejected(
            404, "unknown_model", "model", f"unknown model {model!r}; known models: {known}"
        )
    selected = [
        (m, v)
        for m in sorted(catalogue)
        if model is None or m == model
        for v in sorted(catalogue[m])
        if version is None or v == version
    ]
    if not selected:
        raise RequestRejected(
            404,
            "unknown_model",
            "version",
            f"no served model has version {version!r}"
            + ("" if model is None else f" (model {model!r} has {sorted(catalogue[model])})"),
        )
    snapshots = []
    for m, v in selected:
        monitor = deps.monitors.get(m, v)
        if monitor is not None:
            snapshot = monitor.drift()
            computed_at = _epoch_seconds(snapshot.computed_at, deps.clock, deps.wall_clock)
            snapshots.append(_snapshot_json(snapshot, monitor.profile, computed_at))
    return _json({"models": snapshots})


async def _healthz(_: Request) -> Response:
    return _json({"status": "ok"})


async def _readyz(deps: _Deps, _: Request) -> Response:
    models = {m: list(vs) for m, vs in deps.monitors.models().items()}
    if not models:
        return _error(503, "not_ready", "", "no model profile is loaded")
    return _json({"status": "ready", "models": models})


# --------------------------------------------------------------------------- drift JSON


def _epoch_seconds(at: float, clock: Callable[[], float], wall_clock: Callable[[], float]) -> float:
    """The wall-clock epoch time of ``at``, a reading of the monitors' (monotonic) ``clock``.

    The engine keeps a monotonic clock so that windows never jump with NTP; a client needs a
    real time, so the snapshot's age on that clock is subtracted from the wall clock now.
    """
    return wall_clock() - max(0.0, clock() - at)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _feature_json(drift: FeatureDrift, profile: FeatureProfile | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "feature": drift.feature,
        "kind": drift.kind,
        "window_values": drift.window_values,
        "psi": _finite(drift.psi),
        "test": drift.test,
        "statistic": _finite(drift.statistic),
        "pvalue": _finite(drift.pvalue),
        "pvalue_adjusted": _finite(drift.pvalue_adjusted),
        "drifted": drift.drifted,
        "error_bound": _finite(drift.error_bound),
    }
    if isinstance(profile, CategoricalProfile):
        doc["categories"] = list(profile.categories)
    elif profile is not None:
        doc["psi_edges"] = profile.psi_edges.tolist()
    return doc


def _snapshot_json(snapshot: DriftSnapshot, profile: Profile, computed_at: float) -> dict[str, Any]:
    by_name = {f.name: f for f in profile.features}
    prediction = snapshot.prediction
    return {
        "model": snapshot.model,
        "version": snapshot.version,
        "computed_at": computed_at,
        "window_seconds": snapshot.window_seconds,
        "window_events": snapshot.window_events,
        "correction": snapshot.correction,
        "alpha": snapshot.alpha,
        "features": [_feature_json(f, by_name.get(f.feature)) for f in snapshot.features],
        "prediction": None if prediction is None else _feature_json(prediction, profile.prediction),
    }
