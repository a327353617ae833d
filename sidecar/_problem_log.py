"""The ingest path's log of event problems: each kind once, repeats summarised per interval.

A client that sends the same stray feature or bad field in every batch must not write a log
line per batch, and must not go silent either; the counts are in the metrics, the log carries
the first occurrence of each kind with its context and periodic summaries of the repeats.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from sidecar.events import ParsedEvents, Rejection

PROBLEM_SUMMARY_SECONDS = 60.0
"""Shortest time between two summaries of repeated event problems in the log."""
MAX_PROBLEM_KINDS = 1000
"""Distinct problem kinds remembered for log deduplication; beyond it problems are only summed.

Unknown feature names come from clients, so without a cap the set would grow with traffic."""

_INDEX = re.compile(r"\[\d+\]")


class ProblemLog:
    """Logs each kind of event problem once, then repeats as one summary line per interval.

    A kind is ``(model, version, field, reason)`` for a rejected event and ``(model, version,
    field, warning)`` for a warning, with the event index taken out of the field
    (``events[].features.x``), so a client that sends the same stray feature in every batch
    logs one line, not one per batch. Repeats (and kinds past ``max_kinds``) are counted and
    written as ``event_problems_repeated`` when a problem arrives ``interval_seconds`` or more
    after the previous summary. Not thread-safe: the ingest app calls it from its event loop.
    """

    def __init__(
        self,
        logger: FilteringBoundLogger,
        clock: Callable[[], float] = time.monotonic,
        *,
        interval_seconds: float = PROBLEM_SUMMARY_SECONDS,
        max_kinds: int = MAX_PROBLEM_KINDS,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._interval = interval_seconds
        self._max_kinds = max_kinds
        self._seen: set[tuple[str, str, str, str]] = set()
        self._last_summary = clock()
        self._rejected: Counter[tuple[str, str, str]] = Counter()
        self._warnings: Counter[tuple[str, str]] = Counter()

    def record(self, parsed: ParsedEvents) -> None:
        """Log the new problem kinds of one request and count the repeated ones."""
        model, version = parsed.model, parsed.version
        by_kind: dict[tuple[str, str], list[Rejection]] = {}
        for rejection in parsed.rejections:
            field = _INDEX.sub("[]", rejection.field)
            by_kind.setdefault((field, rejection.reason), []).append(rejection)
        for (field, reason), group in by_kind.items():
            if self._first((model, version, field, reason)):
                self._logger.warning(
                    "events_rejected",
                    model=model,
                    version=version,
                    field=field,
                    reason=reason,
                    events=len(group),
                    received=parsed.received,
                    accepted=parsed.accepted,
                    first_error=group[0].to_json()["error"],
                )
            else:
                self._rejected[(f"{model}/{version}", reason, field)] += len(group)
        for warning in parsed.warnings:
            field = _INDEX.sub("[]", warning.field)
            if self._first((model, version, field, warning.message)):
                self._logger.info(
                    "event_warnings",
                    model=model,
                    version=version,
                    field=field,
                    warning=warning.message,
                    first_warning=f"{warning.field}: {warning.message}",
                    accepted=parsed.accepted,
                )
            else:
                self._warnings[(f"{model}/{version}", field)] += 1
        if parsed.warnings_dropped:
            self._warnings[(f"{model}/{version}", "(dropped from the answer)")] += (
                parsed.warnings_dropped
            )
        self._summarise()

    def _first(self, kind: tuple[str, str, str, str]) -> bool:
        if kind in self._seen or len(self._seen) >= self._max_kinds:
            return False
        self._seen.add(kind)
        return True

    def _summarise(self) -> None:
        now = self._clock()
        if now - self._last_summary < self._interval or not (self._rejected or self._warnings):
            return
        self._logger.warning(
            "event_problems_repeated",
            since_seconds=round(now - self._last_summary, 3),
            rejected=[
                {"model": m, "reason": r, "field": f, "events": n}
                for (m, r, f), n in sorted(self._rejected.items())
            ],
            warnings=[
                {"model": m, "field": f, "events": n}
                for (m, f), n in sorted(self._warnings.items())
            ],
        )
        self._last_summary = now
        self._rejected.clear()
        self._warnings.clear()
