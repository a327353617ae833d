"""The sidecar's own logs: ECS JSON lines, level filtering, stdlib routing, no access log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from sidecar.logs import EVENT_DATASET, SERVICE_NAME, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Leave structlog and the root logger as they were, whatever the test configured."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_disabled = logging.getLogger("uvicorn.access").disabled
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = access_disabled


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_ecs_fields() -> None:
    """A structlog call becomes one JSON object with the ECS keys first and context after."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    get_logger(component="test").info("listening", ingest_port=8081)
    (line,) = _lines(out)
    assert list(line)[:5] == [
        "@timestamp",
        "log.level",
        "message",
        "service.name",
        "event.dataset",
    ]
    assert line["log.level"] == "info"
    assert line["message"] == "listening"
    assert line["service.name"] == SERVICE_NAME
    assert line["event.dataset"] == EVENT_DATASET
    assert (line["component"], line["ingest_port"]) == ("test", 8081)
    stamp = datetime.fromisoformat(str(line["@timestamp"]))
    assert stamp.utcoffset() == UTC.utcoffset(None)


def test_level_filters_lines() -> None:
    """Below the configured level nothing is written, from structlog or from stdlib loggers."""
    out = io.StringIO()
    configure_logging("warning", "json", out)
    get_logger().info("quiet")
    logging.getLogger("uvicorn.error").info("quiet too")
    get_logger().warning("loud")
    assert [line["message"] for line in _lines(out)] == ["loud"]


def test_uvicorn_errors_go_through_the_same_pipeline() -> None:
    """A stdlib record from uvicorn is rendered as the same ECS JSON, with its logger name."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    logging.getLogger("uvicorn.error").error("bind failed on port %d", 8081)
    (line,) = _lines(out)
    assert line["message"] == "bind failed on port 8081"
    assert line["log.level"] == "error"
    assert line["log.logger"] == "uvicorn.error"
    assert line["service.name"] == SERVICE_NAME


def test_access_log_is_off() -> None:
    """The per-request access logger of uvicorn writes nothing."""
    out = io.StringIO()
    configure_logging("debug", "json", out)
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /metrics" 200')
    assert out.getvalue() == ""


def test_exceptions_become_ecs_error_fields() -> None:
    """A logged exception carries error.type, error.message and the stack trace."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    try:
        raise ValueError("bad profile")
    except ValueError:
        get_logger().exception("failed")
    (line,) = _lines(out)
    assert line["error.type"] == "ValueError"
    assert line["error.message"] == "bad profile"
    assert "ValueError: bad profile" in str(line["error.stack_trace"])


def test_reconfiguring_replaces_the_handler() -> None:
    """Calling configure_logging twice leaves one handler, so stdlib lines are not doubled."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", second)
    logging.getLogger("uvicorn.error").warning("once")
    assert first.getvalue() == ""
    assert len(_lines(second)) == 1


def test_console_format_is_readable_text() -> None:
    """The console format writes the message and context as text, not JSON."""
    out = io.StringIO()
    configure_logging("info", "console", out)
    get_logger().info("listening", ingest_port=8081)
    text = out.getvalue()
    assert "listening" in text
    assert "ingest_port=8081" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_bad_arguments_are_refused(level: str, fmt: str) -> None:
    """An unknown level or format raises instead of silently logging at a default."""
    with pytest.raises(ValueError, match="log"):
        configure_logging(level, fmt, io.StringIO())
