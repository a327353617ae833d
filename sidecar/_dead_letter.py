"""The dead-letter file: documents the sink refused for good, with the reason, one JSON per line.

A document Elasticsearch rejects for its mapping or content (a 400 per item) will be rejected
again on every retry, so it is written here and counted instead of blocking the stream. The
files are NDJSON in ``<spool_dir>/dead-letter/``, one per UTC day, each line
``{"@timestamp", "reason", "index", "id", "document"}`` (or ``"record"`` for a spool record
that could not be decoded), so an operator can fix the mapping and re-send them with ``_bulk``.
Writes happen on the shipper thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from sidecar.documents import Document


class DeadLetterFile:
    """Appends refused documents to ``<directory>/dead-letter-YYYY-MM-DD.ndjson``."""

    def __init__(self, directory: Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._wall_clock = wall_clock

    def documents(self, refused: list[tuple[Document, str]]) -> int:
        """Write each ``(document, reason)``; returns how many lines were written."""
        now = self._wall_clock()
        stamp = _rfc3339(now)
        lines = [
            orjson.dumps(
                {
                    "@timestamp": stamp,
                    "reason": reason,
                    "index": doc.index,
                    "id": doc.id,
                    "document": doc.source,
                }
            )
            for doc, reason in refused
        ]
        self._append(now, lines)
        return len(lines)

    def record(self, payload: bytes, reason: str) -> None:
        """Write a spool record that could not be decoded (kept as text, bad bytes replaced)."""
        now = self._wall_clock()
        line = orjson.dumps(
            {
                "@timestamp": _rfc3339(now),
                "reason": reason,
                "record": payload.decode("utf-8", errors="replace"),
            }
        )
        self._append(now, [line])

    def _append(self, now: float, lines: list[bytes]) -> None:
        if not lines:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        with (self.directory / f"dead-letter-{day}.ndjson").open("ab") as out:
            out.write(b"\n".join(lines) + b"\n")


def _rfc3339(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
