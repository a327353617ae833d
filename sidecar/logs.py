"""The sidecar's own logs: one JSON object per line with ECS field names, or a console view.

``configure_logging`` is called once at start-up. It sets up structlog (what modelwatch code
logs through) and routes the standard library's ``logging`` (uvicorn's errors, library warnings)
through the same processor chain, so every line on stderr has the same shape and a log shipper
can index it without parsing rules. Per-request access logs stay off: a sidecar taking thousands
of event batches a second must not write a line for each; what matters is counted in metrics.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

SERVICE_NAME = "modelwatch-sidecar"
EVENT_DATASET = "modelwatch.sidecar"

_HANDLER_NAME = "modelwatch"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_LEADING_KEYS = ("@timestamp", "log.level", "message")
# Plain tracebacks: rich ones print local variables, and locals can hold the ingest token.
_PLAIN_TRACEBACK = structlog.dev.plain_traceback


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    *,
    service_name: str = SERVICE_NAME,
    dataset: str = EVENT_DATASET,
) -> None:
    """Send structlog and stdlib logging at ``level`` or above to ``stream`` (default stderr).

    ``fmt`` is ``"json"`` (ECS keys, one object per line) or ``"console"`` (for people at a
    terminal). ``service_name`` and ``dataset`` fill ECS ``service.name`` and ``event.dataset``
    (the model server passes its own). Calling it again replaces the previous configuration.
    """
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be 'json' or 'console', got {fmt!r}")
    out = sys.stderr if stream is None else stream
    threshold = _LEVELS[level]
    json = fmt == "json"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(
            fmt="iso", utc=True, key="@timestamp" if json else "timestamp"
        ),
    ]
    # The console renderer lays out structlog's own keys, so ECS names are for JSON only.
    final: list[Processor] = (
        [
            _error_fields,
            _EcsFields(service_name, dataset),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
        if json
        else [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_PLAIN_TRACEBACK)]
    )
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, threshold, shared, final)


def get_logger(**context: object) -> FilteringBoundLogger:
    """A structlog logger with ``context`` bound (e.g. ``component="ingest"``)."""
    return cast(FilteringBoundLogger, structlog.get_logger(**context))


def _route_stdlib(
    out: TextIO, threshold: int, shared: list[Processor], final: list[Processor]
) -> None:
    """Replace our root handler so stdlib records get the same fields and the same renderer."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    # uvicorn's access logger would write one line per request; we count requests instead.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True


def _error_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Turn ``exc_info`` into ECS ``error.type`` / ``error.message`` / ``error.stack_trace``."""
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    exc: BaseException | None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = sys.exc_info()[1]
    if exc is None:
        return event_dict
    event_dict["error.type"] = type(exc).__name__
    event_dict["error.message"] = str(exc)
    event_dict["error.stack_trace"] = "".join(traceback.format_exception(exc))
    return event_dict


class _EcsFields:
    """Rename structlog's keys to ECS and put the fields a reader scans for first."""

    def __init__(self, service_name: str, dataset: str) -> None:
        self._service_name = service_name
        self._dataset = dataset

    def __call__(self, _: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Reorder and rename one event's keys."""
        body: MutableMapping[str, Any] = dict(event_dict)
        ordered: EventDict = {
            "@timestamp": body.pop("@timestamp", None),
            "log.level": body.pop("level", method_name),
            "message": body.pop("event", ""),
        }
        logger_name = body.pop("logger", None)
        if logger_name is not None:
            ordered["log.logger"] = logger_name
        ordered["service.name"] = self._service_name
        ordered["event.dataset"] = self._dataset
        for key, value in body.items():
            if key not in _LEADING_KEYS:
                ordered[key] = value
        return ordered


def _dumps(obj: Any, **kwargs: Any) -> str:
    default = kwargs.get("default", str)
    return orjson.dumps(
        obj, default=default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    ).decode()
