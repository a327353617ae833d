"""Problem reports of the prediction logger: each kind at once, then at most once per period.

A sidecar that is down for an hour must not write a line per retry, and a model that sends an
unencodable value on every prediction must not write a line per prediction; but neither may go
silent. So the first occurrence of each kind is logged with its context, later ones are counted
and logged at most once per ``every`` seconds with that count. A broken log handler never breaks
delivery.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Protocol


class Log(Protocol):
    """What the logger needs to report problems: a ``logging.Logger`` or a structlog logger."""

    def warning(self, msg: str, /) -> object:
        """Log ``msg`` at warning level."""
        ...

    def info(self, msg: str, /) -> object:
        """Log ``msg`` at info level."""
        ...


class Throttle:
    """Logs each kind of problem when first seen, then at most once per ``every`` seconds."""

    def __init__(self, log: Log, clock: Callable[[], float], prefix: str, every: float) -> None:
        self._log = log
        self._clock = clock
        self._prefix = prefix
        self._every = every
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        """Log ``message`` at warning level unless ``kind`` was logged within the period."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._every:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        more = f" ({held} more like this since the last report)" if held else ""
        with contextlib.suppress(Exception):
            self._log.warning(self._prefix + message + more)

    def info(self, message: str) -> None:
        """Log ``message`` at info level, unthrottled (used for rare state changes)."""
        with contextlib.suppress(Exception):
            self._log.info(self._prefix + message)
