"""The model server's settings: read once at start-up from ``MODELWATCH_*`` keys, then frozen.

``ServingSettings.from_environ`` is the only door. It parses every key, validates them all and
raises one ``ConfigError`` naming every bad key at once, like the sidecar's settings. Nothing
else in ``serving`` reads ``os.environ``: ``serving.server`` hands the environment in. Keys and
defaults are documented in ``docs/serving.md``; keep the two in step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.client import parse_url
from sidecar.errors import ConfigError
from sidecar.settings import LOG_FORMATS, LOG_LEVELS, SECRET_MASK, Address, LogFormat

ENV_PREFIX = "MODELWATCH_"


@dataclass(frozen=True, slots=True)
class ServingSettings:
    """Every setting of ``python -m serving``, validated (see ``docs/serving.md``)."""

    model_uri: Path
    serving_addr: Address = Address("0.0.0.0", 8080)  # noqa: RUF009, S104 - frozen value; clients call from outside the pod
    sidecar_url: str = "http://127.0.0.1:8081"
    ingest_token: str | None = None
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_instances: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024
    log_sample_rate: float = 1.0
    logging_enabled: bool = True
    feedback_timeout_seconds: float = 5.0
    onnx_threads: int = 0
    log_level: str = "info"
    log_format: LogFormat = "json"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServingSettings:
        """Settings from ``environ``; ``ConfigError`` lists every bad ``MODELWATCH_*`` key."""
        problems: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            raw = environ.get(env_key(name))
            if raw is None or (not raw.strip() and name != "ingest_token"):
                continue
            try:
                values[name] = parse(raw)
            except _InvalidValueError as exc:
                problems[env_key(name)] = str(exc)
        if "model_uri" not in values and env_key("model_uri") not in problems:
            problems[env_key("model_uri")] = (
                "is required: the path of a model.onnx file or of a directory holding "
                "model.onnx and metadata.json"
            )
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    @property
    def max_wait_seconds(self) -> float:
        """The batching wait in seconds."""
        return self.max_wait_ms / 1000.0

    def redacted(self) -> dict[str, object]:
        """The effective settings as JSON-safe values for the start-up log; the token is masked."""
        return {
            "model_uri": str(self.model_uri),
            "serving_addr": str(self.serving_addr),
            "sidecar_url": self.sidecar_url,
            "ingest_token": None if self.ingest_token is None else SECRET_MASK,
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "max_instances": self.max_instances,
            "max_body_bytes": self.max_body_bytes,
            "log_sample_rate": self.log_sample_rate,
            "logging_enabled": self.logging_enabled,
            "feedback_timeout_seconds": self.feedback_timeout_seconds,
            "onnx_threads": self.onnx_threads,
            "log_level": self.log_level,
            "log_format": self.log_format,
        }


def env_key(name: str) -> str:
    """The environment key of setting ``name`` (``max_wait_ms`` → ``MODELWATCH_MAX_WAIT_MS``)."""
    return ENV_PREFIX + name.upper()


# --------------------------------------------------------------------------- parsing


class _InvalidValueError(ValueError):
    """One value failed to parse; the message is the reason shown next to the key."""


def _float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise _InvalidValueError(f"must be a number, got {raw.strip()!r}") from None
    if not math.isfinite(value):
        raise _InvalidValueError(f"must be finite, got {raw.strip()!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        text = raw.strip()
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise _InvalidValueError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise _InvalidValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _float_between(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = _float(raw)
        too_low = value <= low if low_open else value < low
        if too_low or value > high:
            bracket = "(" if low_open else "["
            raise _InvalidValueError(f"must lie in {bracket}{low:g}, {high:g}], got {value!r}")
        return value

    return parse


def _bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _InvalidValueError(f"must be true or false, got {raw.strip()!r}")


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise _InvalidValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return value

    return parse


def _address(raw: str) -> Address:
    text = raw.strip()
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _InvalidValueError(f"an IPv6 host must be in brackets ([::1]:8080), got {text!r}")
    if not sep or not host:
        raise _InvalidValueError(f"must be HOST:PORT, got {text!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise _InvalidValueError(f"port must be an integer in 0..65535, got {port_text!r}")
    return Address(host, int(port_text))


def _url(raw: str) -> str:
    text = raw.strip()
    if not text.lower().startswith("unix:"):
        text = text.rstrip("/")  # a socket path ending in / names a folder: refused below
    try:
        parse_url(text)  # the prediction logger's own reading: one definition of a valid URL
    except ValueError as exc:
        raise _InvalidValueError(str(exc).removeprefix("url: ")) from None
    return text


def _token(raw: str) -> str | None:
    text = raw.strip()
    if any(ch.isspace() for ch in text):
        raise _InvalidValueError("must not contain whitespace")
    return text or None


def _path(raw: str) -> Path:
    return Path(raw.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "model_uri": _path,
    "serving_addr": _address,
    "sidecar_url": _url,
    "ingest_token": _token,
    "max_batch_size": _int_at_least(1),
    "max_wait_ms": _float_between(0.0, 1000.0),
    "max_instances": _int_at_least(1),
    "max_body_bytes": _int_at_least(1024),
    "log_sample_rate": _float_between(0.0, 1.0),
    "logging_enabled": _bool,
    "feedback_timeout_seconds": _float_between(0.0, 300.0, low_open=True),
    "onnx_threads": _int_at_least(0),
    "log_level": _choice(LOG_LEVELS),
    "log_format": _choice(LOG_FORMATS),
}
