"""The NDJSON file sink: rotating, ``_bulk``-ready files in a local directory.

Used when no Elasticsearch is configured. Each data stream writes its own files, named
``<stream>-YYYYmmdd-HHMMSS-N.ndjson`` (``predictions-…``, ``drift-…``; UTC, ``N`` tells apart
files opened in the same second). Every document is two lines, a ``create`` action with the
data stream and ``_id``, then the source, so a file can be sent to Elasticsearch's ``_bulk`` as
it is and a replayed file is refused as duplicates rather than indexed twice. Files rotate
past ``max_file_bytes``; at most ``max_files`` are kept per stream, the oldest deleted and
counted in ``files_deleted``. Writes are flushed to the operating system after every batch,
not fsynced: the spool, not this sink, is what survives a node crash.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sidecar._sink_types import DELIVERED, ItemResult, Outcome
from sidecar.documents import Document

_FILE_NAME = re.compile(r"^(?P<stem>[a-z0-9_.]+)-(?P<stamp>\d{8}-\d{6})-(?P<n>\d+)\.ndjson$")


class NdjsonFileSink:
    """Writes documents to rotating NDJSON files under ``directory`` (created if missing)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_file_bytes: int = 64 << 20,
        max_files: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be at least 1, got {max_file_bytes}")
        if max_files < 1:
            raise ValueError(f"max_files must be at least 1, got {max_files}")
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, _OpenFile] = {}
        self._files_deleted = 0
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def files_deleted(self) -> int:
        """Files deleted so far to keep at most ``max_files`` per stream."""
        return self._files_deleted

    def send(self, documents: Sequence[Document]) -> list[ItemResult]:
        """Append the documents; a disk error makes the whole batch ``RETRY``.

        A batch that failed half-way may be partly on disk when it is retried; the copies
        share their ``_id``, so ``_bulk`` stores each document once.
        """
        results: list[ItemResult] = []
        chunks: dict[str, list[bytes]] = {}
        for document in documents:
            try:
                lines = document.bulk_lines()
            except TypeError as exc:
                results.append(ItemResult(Outcome.DEAD, f"not JSON: {exc}"))
                continue
            chunks.setdefault(stream_stem(document.index), []).append(lines)
            results.append(DELIVERED)
        with self._lock:
            try:
                for stem, lines_list in chunks.items():
                    self._write(stem, lines_list)
            except OSError as exc:
                self._close_all()
                retry = ItemResult(Outcome.RETRY, f"cannot write to {self.directory}: {exc}")
                return [retry if result is DELIVERED else result for result in results]
        return results

    def close(self) -> None:
        """Flush and close the open files."""
        with self._lock:
            self._close_all()

    def _write(self, stem: str, documents: list[bytes]) -> None:
        current = self._open.get(stem) or self._start_file(stem)
        buffer = bytearray()
        for lines in documents:
            pending = current.size + len(buffer)
            # A document larger than a whole file still gets a file of its own.
            if pending and pending + len(lines) > self.max_file_bytes:
                current.append(buffer)
                buffer.clear()
                current.close()
                current = self._start_file(stem)
            buffer += lines
        current.append(buffer)

    def _start_file(self, stem: str) -> _OpenFile:
        self._open.pop(stem, None)
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%d-%H%M%S")
        # Numbers only grow within a second, even after older files were pruned, so that
        # name order stays age order.
        taken = [
            key[1]
            for path in self.directory.iterdir()
            if (key := _age_key(path.name, stem)) is not None and key[0] == stamp
        ]
        number = max(taken, default=-1) + 1
        while True:
            path = self.directory / f"{stem}-{stamp}-{number}.ndjson"
            try:
                handle = path.open("xb")
            except FileExistsError:  # another writer took it between the scan and now
                number += 1
                continue
            break
        opened = _OpenFile(path, handle)
        self._open[stem] = opened
        self._prune(stem, path)
        return opened

    def _prune(self, stem: str, keep: Path) -> None:
        """Delete the oldest files of ``stem`` so that ``keep`` and ``max_files - 1`` remain."""
        # ``keep`` (the file just opened) is left out by path, not by age, so a wall clock
        # stepping backwards cannot get the open file deleted.
        files = sorted(
            (key, path)
            for path in self.directory.iterdir()
            if path != keep and (key := _age_key(path.name, stem)) is not None
        )
        for _, path in files[: max(0, len(files) - (self.max_files - 1))]:
            path.unlink(missing_ok=True)
            self._files_deleted += 1

    def _close_all(self) -> None:
        for opened in self._open.values():
            # The file is gone or the disk is failing; the next batch opens a new file.
            with contextlib.suppress(OSError):
                opened.close()
        self._open.clear()


class _OpenFile:
    """A file being appended to, with its size known without a stat per write."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self.size = 0
        self._handle = handle

    def append(self, data: bytes | bytearray) -> None:
        self._handle.write(data)
        self._handle.flush()
        self.size += len(data)

    def close(self) -> None:
        self._handle.close()


def stream_stem(index: str) -> str:
    """The file name stem of a data stream: ``logs-modelwatch.predictions-x`` → ``predictions``."""
    parts = index.split("-")
    dataset = parts[1] if len(parts) == 3 else index
    return dataset.removeprefix("modelwatch.").replace("-", "_")


def _age_key(name: str, stem: str) -> tuple[str, int] | None:
    match = _FILE_NAME.match(name)
    if match is None or match["stem"] != stem:
        return None
    return match["stamp"], int(match["n"])
