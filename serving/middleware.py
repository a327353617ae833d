"""Per-request context: request id, trace id, model headers, and the HTTP metrics.

A pure ASGI middleware (no per-request task or body copy) that, for every HTTP request:
takes ``X-Request-ID`` when it is sane or makes one; takes the trace id from a W3C
``traceparent`` header, else uses the request id; binds both into structlog's context (ECS
``http.request.id`` and ``trace.id``) and into ``current_context()`` for the prediction log;
adds ``X-Request-ID``, ``X-Model-Name`` and ``X-Model-Version`` to the answer; and records the
in-flight gauge and the latency histogram by route *template* (``/v1/models/{name}:predict``),
never the raw path, so the label set stays bounded.
"""

from __future__ import annotations

import re
import time
from contextvars import ContextVar
from dataclasses import dataclass

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import UNMATCHED_ROUTE, ServingMetrics
from sidecar._client_ids import new_event_id

_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")
_ZERO_TRACE = b"0" * 32
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The ids of the request being served."""

    request_id: str
    trace_id: str


_NO_REQUEST = RequestContext("", "")
_CONTEXT: ContextVar[RequestContext] = ContextVar("modelwatch_request", default=_NO_REQUEST)


def current_context() -> RequestContext:
    """The ids of the request this task is serving (empty strings outside a request)."""
    return _CONTEXT.get()


def ids_from_headers(headers: list[tuple[bytes, bytes]]) -> RequestContext:
    """The request and trace ids a request carries, minting a request id when it has none."""
    request_id: bytes | None = None
    trace_id: bytes | None = None
    for key, value in headers:
        if key == b"x-request-id" and _REQUEST_ID.match(value):
            request_id = value
        elif key == b"traceparent":
            match = _TRACEPARENT.match(value)
            if match and match.group(1) != _ZERO_TRACE:
                trace_id = match.group(1)
    rid = request_id.decode() if request_id else new_event_id()
    return RequestContext(rid, trace_id.decode() if trace_id else rid)


class RequestContextMiddleware:
    """Ids, model headers and HTTP metrics around every request."""

    def __init__(self, app: ASGIApp, *, metrics: ServingMetrics, model: str, version: str) -> None:
        self.app = app
        self._metrics = metrics
        self._model_headers = [
            (b"x-model-name", model.encode()),
            (b"x-model-version", version.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (other scope types pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = ids_from_headers(scope["headers"])
        token = _CONTEXT.set(context)
        bound = structlog.contextvars.bind_contextvars(
            **{"http.request.id": context.request_id, "trace.id": context.trace_id}
        )
        extra = [*self._model_headers, (b"x-request-id", context.request_id.encode())]
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        metrics = self._metrics
        metrics.request_started()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _METHODS else "other"
            metrics.request_finished(template, method, status, time.perf_counter() - started)
            structlog.contextvars.reset_contextvars(**bound)
            _CONTEXT.reset(token)
