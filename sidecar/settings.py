"""The sidecar's settings: read once at start-up from the environment and CLI flags, then frozen.

``Settings.from_sources`` is the only door: it parses every ``MODELWATCH_*`` key, lets CLI flags
override them, validates everything and raises one ``ConfigError`` naming every bad key at once,
so an operator fixes a broken Deployment in one round trip. Nothing else in the sidecar reads
``os.environ``; the server hands the environment in. Keys, defaults and rules are documented in
``docs/configuration.md``; keep the two in step.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from sidecar.engine import DEFAULT_LATENCY_BUCKETS
from sidecar.errors import ConfigError
from sidecar.es_settings import EsSettings
from sidecar.window import MAX_SLOTS, slot_count

ENV_PREFIX = "MODELWATCH_"
SECRET_MASK = "***"  # noqa: S105 - the mask shown instead of the token, not a secret

Correction = Literal["benjamini-hochberg", "bonferroni"]
LogFormat = Literal["json", "console"]

CORRECTIONS: tuple[Correction, ...] = ("benjamini-hochberg", "bonferroni")
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_PROFILE_SEPARATORS = re.compile(r"[,:]")
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
MiB = 1024 * 1024
MAX_SOCKET_PATH_BYTES = 107
"""Longest Unix socket path Linux can bind: ``sun_path`` holds 108 bytes with the final NUL."""


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP listen address; port 0 asks the OS for a free port (tests use it)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the ``serve`` process, validated (see ``docs/configuration.md``)."""

    profiles: tuple[Path, ...]
    ingest_addr: Address = Address("127.0.0.1", 8081)
    ingest_socket: Path | None = None
    """A Unix socket serving the same ingest API as ``ingest_addr``, in addition to it."""
    metrics_addr: Address = Address("0.0.0.0", 9500)  # noqa: S104 - Prometheus scrapes from outside the pod
    window_seconds: float = 3600.0
    slot_seconds: float = 60.0
    ingest_token: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_events: int = 10_000
    body_timeout_seconds: float = 30.0
    alpha: float = 0.05
    correction: Correction = "benjamini-hochberg"
    min_window_values: int = 100
    latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    feedback_capacity: int = 100_000
    log_level: str = "info"
    log_format: LogFormat = "json"
    shipping: bool = True
    spool_dir: Path = Path("var/spool")
    spool_max_bytes: int = 1024 * MiB
    spool_fsync_seconds: float = 1.0
    log_dir: Path = Path("var/predictions")
    es_batch_docs: int = 2_000
    es_batch_bytes: int = 5 * MiB
    es_max_backoff_seconds: float = 30.0
    drift_snapshot_seconds: float = 60.0
    es: EsSettings = field(default_factory=EsSettings)
    """Elasticsearch, document and redaction settings (``sidecar.es_settings``)."""

    @classmethod
    def from_sources(
        cls, environ: Mapping[str, str], overrides: Mapping[str, object] | None = None
    ) -> Settings:
        """Settings from ``MODELWATCH_*`` keys in ``environ``, then ``overrides`` on top.

        ``overrides`` is keyed by field name (what the CLI flags set); a None value means "not
        given". Values may be strings (parsed like the environment) or already typed. Raises
        ``ConfigError`` listing every bad key (``MODELWATCH_ALPHA`` or ``--alpha``) at once.
        """
        overrides = overrides or {}
        problems: dict[str, str] = {}
        known = {f.name for f in fields(cls)}
        for name in overrides:
            if name not in known:
                problems[_flag(name)] = "is not a setting"
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            key, raw = _pick(name, environ, overrides)
            if raw is None:
                continue
            try:
                values[name] = parse(raw)
            except _InvalidValueError as exc:
                problems[key] = str(exc)
        profile_keys = (_env("profiles"), _flag("profiles"))
        if "profiles" not in values and not any(k in problems for k in profile_keys):
            problems[_env("profiles")] = "at least one profile path is required (or --profile)"
        _check_relations(values, environ, overrides, problems)
        try:
            values["es"] = EsSettings.from_environ(environ)
        except ConfigError as exc:
            problems.update(exc.problems)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def redacted(self) -> dict[str, object]:
        """The effective settings as JSON-safe values for the start-up log; the token is masked."""
        return {
            "profiles": [str(p) for p in self.profiles],
            "ingest_addr": str(self.ingest_addr),
            "ingest_socket": None if self.ingest_socket is None else str(self.ingest_socket),
            "metrics_addr": str(self.metrics_addr),
            "window_seconds": self.window_seconds,
            "slot_seconds": self.slot_seconds,
            "ingest_token": None if self.ingest_token is None else SECRET_MASK,
            "max_body_bytes": self.max_body_bytes,
            "max_events": self.max_events,
            "body_timeout_seconds": self.body_timeout_seconds,
            "alpha": self.alpha,
            "correction": self.correction,
            "min_window_values": self.min_window_values,
            "latency_buckets": list(self.latency_buckets),
            "feedback_capacity": self.feedback_capacity,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "shipping": self.shipping,
            "spool_dir": str(self.spool_dir),
            "spool_max_bytes": self.spool_max_bytes,
            "spool_fsync_seconds": self.spool_fsync_seconds,
            "log_dir": str(self.log_dir),
            "es_batch_docs": self.es_batch_docs,
            "es_batch_bytes": self.es_batch_bytes,
            "es_max_backoff_seconds": self.es_max_backoff_seconds,
            "drift_snapshot_seconds": self.drift_snapshot_seconds,
            "es": self.es.redacted(),
        }


def env_key(name: str) -> str:
    """The environment key of setting ``name`` (``alpha`` → ``MODELWATCH_ALPHA``)."""
    return _env(name)


def flag(name: str) -> str:
    """The CLI flag of setting ``name`` (``window_seconds`` → ``--window-seconds``)."""
    return _flag(name)


# --------------------------------------------------------------------------- parsing


class _InvalidValueError(ValueError):
    """One value failed to parse; the message is the reason shown next to the key."""


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _flag(name: str) -> str:
    # Profiles come one per flag, so the flag is singular.
    return "--profile" if name == "profiles" else "--" + name.replace("_", "-")


def _pick(
    name: str, environ: Mapping[str, str], overrides: Mapping[str, object]
) -> tuple[str, object]:
    """Where a setting comes from (the key to blame) and its raw value; None when unset."""
    value = overrides.get(name)
    if value is not None:
        return _flag(name), value
    return _env(name), environ.get(_env(name))


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise _InvalidValueError(f"must be a string, got {type(raw).__name__}")
    return raw.strip()


def _float(raw: object) -> float:
    if isinstance(raw, bool):
        raise _InvalidValueError("must be a number, got a boolean")
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        text = _text(raw)
        try:
            value = float(text)
        except ValueError:
            raise _InvalidValueError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _InvalidValueError(f"must be finite, got {value!r}")
    return value


def _int(raw: object) -> int:
    if isinstance(raw, bool):
        raise _InvalidValueError("must be an integer, got a boolean")
    if isinstance(raw, int):
        return raw
    text = _text(raw)
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise _InvalidValueError(f"must be an integer, got {text!r}") from None


def _positive_float(raw: object) -> float:
    value = _float(raw)
    if value <= 0:
        raise _InvalidValueError(f"must be greater than 0, got {value!r}")
    return value


def _at_least(minimum: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        value = _int(raw)
        if value < minimum:
            raise _InvalidValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        value = _text(raw).lower()
        if value not in options:
            raise _InvalidValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return value

    return parse


def _address(raw: object) -> Address:
    text = _text(raw)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise _InvalidValueError(f"must be HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _InvalidValueError(f"an IPv6 host must be in brackets ([::1]:9500), got {text!r}")
    if not host:
        raise _InvalidValueError(f"must be HOST:PORT with a non-empty host, got {text!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise _InvalidValueError(f"port must be an integer in 0..65535, got {port_text!r}")
    return Address(host, int(port_text))


def _profiles(raw: object) -> tuple[Path, ...]:
    items: list[object] = list(raw) if isinstance(raw, list | tuple) else [raw]
    paths: list[Path] = []
    for item in items:
        if isinstance(item, Path):
            paths.append(item)
            continue
        parts = (p.strip() for p in _PROFILE_SEPARATORS.split(_text(item)))
        paths.extend(Path(p) for p in parts if p)
    if not paths:
        raise _InvalidValueError("at least one profile path is required")
    return tuple(paths)


def _switch(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _text(raw).lower()
    if text not in _SWITCH:
        raise _InvalidValueError(f"must be on or off, got {text!r}")
    return _SWITCH[text]


def _path(raw: object) -> Path:
    if isinstance(raw, Path):
        return raw
    text = _text(raw)
    if not text:
        raise _InvalidValueError("must be a directory path, got an empty string")
    return Path(text)


def _socket_path(raw: object) -> Path | None:
    text = str(raw) if isinstance(raw, Path) else _text(raw)
    if not text:
        return None
    if "\0" in text:
        raise _InvalidValueError("must not contain a NUL character")
    if not os.path.isabs(text):
        raise _InvalidValueError(f"must be an absolute path, got {text!r}")
    try:
        size = len(os.fsencode(text))
    except UnicodeEncodeError:
        raise _InvalidValueError("cannot be encoded as a file name") from None
    if size > MAX_SOCKET_PATH_BYTES:
        raise _InvalidValueError(
            f"is {size} bytes long; a Unix socket path may have at most "
            f"{MAX_SOCKET_PATH_BYTES} bytes"
        )
    return Path(text)


def _token(raw: object) -> str | None:
    text = _text(raw)
    if any(ch.isspace() for ch in text):
        raise _InvalidValueError("must not contain whitespace")
    return text or None


def _buckets(raw: object) -> tuple[float, ...]:
    items: list[object] = (
        list(raw)
        if isinstance(raw, list | tuple)
        else [p for p in _text(raw).split(",") if p.strip()]
    )
    if not items:
        raise _InvalidValueError("must list at least one bucket bound")
    try:
        bounds = tuple(_positive_float(item) for item in items)
    except _InvalidValueError as exc:
        raise _InvalidValueError(f"every bound {exc}") from None
    for lower, upper in itertools.pairwise(bounds):
        if not upper > lower:
            raise _InvalidValueError(
                f"bounds must be strictly increasing ({lower!r} then {upper!r})"
            )
    return bounds


_PARSERS: dict[str, Callable[[object], Any]] = {
    "profiles": _profiles,
    "ingest_addr": _address,
    "ingest_socket": _socket_path,
    "metrics_addr": _address,
    "window_seconds": _positive_float,
    "slot_seconds": _positive_float,
    "ingest_token": _token,
    "max_body_bytes": _at_least(1024),
    "max_events": _at_least(1),
    "body_timeout_seconds": _positive_float,
    "alpha": _float,
    "correction": _choice(CORRECTIONS),
    "min_window_values": _at_least(1),
    "latency_buckets": _buckets,
    "feedback_capacity": _at_least(1),
    "log_level": _choice(LOG_LEVELS),
    "log_format": _choice(LOG_FORMATS),
    "shipping": _switch,
    "spool_dir": _path,
    "spool_max_bytes": _at_least(MiB),
    "spool_fsync_seconds": _positive_float,
    "log_dir": _path,
    "es_batch_docs": _at_least(1),
    "es_batch_bytes": _at_least(1024),
    "es_max_backoff_seconds": _positive_float,
    "drift_snapshot_seconds": _positive_float,
}


def _check_relations(
    values: Mapping[str, Any],
    environ: Mapping[str, str],
    overrides: Mapping[str, object],
    problems: dict[str, str],
) -> None:
    """Checks beyond one value's type: ranges and rules between values that did parse."""

    def blame(name: str) -> str:
        return _pick(name, environ, overrides)[0]

    alpha = values.get("alpha")
    if alpha is not None and not 0 < alpha < 1:
        problems[blame("alpha")] = f"must lie in (0, 1), got {alpha!r}"
    if blame("window_seconds") in problems or blame("slot_seconds") in problems:
        return
    defaults = {f.name: f.default for f in fields(Settings)}
    window = values.get("window_seconds", defaults["window_seconds"])
    slot = values.get("slot_seconds", defaults["slot_seconds"])
    if slot > window:
        problems[blame("slot_seconds")] = (
            f"must not exceed the window ({slot!r} > {window!r} seconds)"
        )
    elif (slots := slot_count(window, slot)) > MAX_SLOTS:
        # Every slot holds a count per bin of every column, so this bounds start-up memory.
        problems[blame("slot_seconds")] = (
            f"{blame('window_seconds')} / {blame('slot_seconds')} = {window!r} / {slot!r} gives "
            f"{slots} window slots; at most {MAX_SLOTS} are allowed (memory is slots × bins × 8 "
            f"bytes per model version): use a slot of at least {window / MAX_SLOTS:g} seconds "
            "or a shorter window"
        )
