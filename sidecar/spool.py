"""The disk spool between ingest and shipping: accepted requests wait here until delivered.

One writer (the event loop) appends framed records to numbered segment files
(``00000000000000000042.seg``); one reader (the shipper thread) reads them in order, ships them
and commits its position, which deletes the segments it has passed. The format and the failure
handling are described in ``docs/spool.md``; in short:

- ``append`` is one ``pwritev`` of header and payload (no copy, no fsync) and never raises: a full
  spool or a disk error returns False, counts the record as dropped and logs once per episode.
  Once it returns True the record survives a crash of this process (it is in the page cache).
- A background thread fsyncs the open segment (and the directory after segments were created)
  every ``fsync_interval`` seconds; that interval is what a crash of the *node* can lose.
- ``read`` checks every record's CRC. Damage in a segment moves the rest of that segment to
  ``<segment>.corrupt``, is counted and logged, and reading goes on with the next segment.
- ``commit`` writes the progress marker atomically (temporary file, fsync, rename, directory
  fsync) and deletes the segments wholly before it. Replaying records after a lost or corrupt
  marker is harmless: documents are created with their event id as ``_id``.

The spool must never block or fail the ingest path: no fsync, no directory scan and no exception
on ``append``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from sidecar._spool_files import fsync_dir, lock_directory, quarantine_tail, write_marker
from sidecar._spool_format import (
    MAX_PAYLOAD,
    Damage,
    Scanner,
    encode_header,
    header_written_at,
    segment_name,
)
from sidecar._spool_recovery import recover
from sidecar._spool_syncer import PeriodicSync
from sidecar.errors import ConfigError
from sidecar.logs import get_logger

__all__ = ["Spool", "SpoolPosition", "SpoolRecord", "SpoolStats"]

SETTING = "MODELWATCH_SPOOL_DIR"
"""The setting named in the ``ConfigError`` raised for an unusable directory."""
_MIN_SEGMENT_BYTES = 4096


@dataclass(frozen=True, order=True, slots=True)
class SpoolPosition:
    """A place in the spool: ``offset`` is the byte offset just after a record in ``segment``."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back; ``written_at`` is the wall-clock time of its ``append``."""

    position: SpoolPosition
    payload: bytes
    written_at: float


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """The spool's state for metrics and health checks.

    ``bytes`` counts every segment on disk (quarantined ``.corrupt`` files are not); the two
    counters only grow; ``oldest_written_at`` is that of the oldest uncommitted record, None
    when everything was committed.
    """

    bytes: int
    segments: int
    records_dropped: int
    corrupt_segments: int
    oldest_written_at: float | None


class Spool:
    """An append-only, crash-safe queue of byte records in a directory (see module docstring).

    Thread-safety: ``append`` may run on one thread while ``read`` and ``commit`` run on another;
    all methods may be called from any thread. Only one ``Spool`` may use a directory at a time
    (an exclusive ``flock`` on ``spool.lock``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        _check_arguments(max_bytes, segment_bytes, fsync_interval)
        self._dir = directory
        self._max_bytes = max_bytes
        # A quarter of max_bytes at most, so a full spool always has closed segments that a
        # commit can delete; otherwise one huge open segment could keep it full for good.
        self._segment_bytes = max(_MIN_SEGMENT_BYTES, min(segment_bytes, max_bytes // 4))
        self._clock = clock
        self._log = logger if logger is not None else get_logger(component="spool")
        self._lock = threading.Lock()  # writer state: open segment, sizes, counters
        self._reading = threading.Lock()  # one read or commit at a time
        self._lock_fd = _claim_directory(directory)
        try:
            found = recover(directory, self._log)
            self._open_number = found.next_segment
            self._fd: int | None = _create_segment(directory, found.next_segment)
            fsync_dir(directory)
        except OSError as exc:
            os.close(self._lock_fd)
            raise ConfigError({SETTING: f"cannot recover the spool in {directory}: {exc}"}) from exc
        self._closed: dict[int, int] = found.segments  # closed segment → readable end, ascending
        self._closed_bytes = sum(found.segments.values())
        self._open_end = 0
        self._committed = SpoolPosition(*found.marker) if found.marker else None
        self._dropped = 0
        self._corrupt = found.corrupt_segments
        self._episode: set[str] = set()  # drop reasons already logged in this episode
        self._episode_drops = 0
        self._pending: list[int] = []  # descriptors of rotated segments awaiting their fsync
        self._dirty = False
        self._dir_dirty = False
        self._commit_failing = False
        self._sync_failing = False
        self._shut = False
        with self._lock:
            self._oldest = self._written_at_after(self._committed)
        self._syncer = PeriodicSync(fsync_interval, self.sync, self._log)
        self._syncer.start()

    def append(self, payload: bytes) -> bool:
        """Write one record to the open segment; False when it was dropped (counted and logged).

        Costs a CRC of the payload and one ``pwritev`` (no copy, no fsync). Never raises.
        """
        if len(payload) > MAX_PAYLOAD:
            with self._lock:
                return self._drop("too_large", payload_bytes=len(payload))
        written_at = self._clock()
        header = encode_header(payload, written_at)
        size = len(header) + len(payload)
        with self._lock:
            fd = self._fd
            if fd is None:
                return self._drop("closed")
            used = self._closed_bytes + self._open_end
            if used + size > self._max_bytes:
                return self._drop("full", bytes=used, max_bytes=self._max_bytes, record=size)
            try:
                if self._open_end > 0 and self._open_end + size > self._segment_bytes:
                    fd = self._rotate(fd)
                self._write(fd, header, payload, size)
            except OSError as exc:
                return self._drop("write_failed", error=_describe(exc), segment=self._open_name())
            self._open_end += size
            self._dirty = True
            if self._oldest is None:
                self._oldest = written_at
            if self._episode:
                self._log.info("spool_accepting_again", dropped=self._episode_drops)
                self._episode.clear()
                self._episode_drops = 0
            return True

    def read(
        self, after: SpoolPosition | None, *, max_records: int, max_bytes: int
    ) -> list[SpoolRecord]:
        """Good records after ``after`` (None: from the oldest), in order, across segments.

        Stops at ``max_records`` records or before the payloads would pass ``max_bytes`` (one
        record is returned even if it alone is larger, so a big record cannot stall the reader).
        Damaged data is quarantined and skipped, never returned.
        """
        if max_records < 1 or max_bytes < 1:
            raise ValueError(
                f"max_records and max_bytes must be ≥ 1, got {max_records}, {max_bytes}"
            )
        records: list[SpoolRecord] = []
        budget = max_bytes
        with self._reading:
            self._ensure_open()
            position = after
            while len(records) < max_records:
                found = self._next_range(position)
                if found is None:
                    break
                number, start, end, is_open = found
                full, budget = self._read_range(
                    number, start, end, records, max_records=max_records, budget=budget
                )
                if full or is_open:
                    break
                position = SpoolPosition(number, self._closed.get(number, end))
        return records

    def committed(self) -> SpoolPosition | None:
        """The durable progress marker: loaded at start-up, then the last ``commit``."""
        return self._committed

    def commit(self, position: SpoolPosition) -> None:
        """Record that everything up to ``position`` is delivered and delete what lies before it.

        ``position`` must not go backwards or past the last record written (``ValueError``).
        Disk errors are logged, not raised: a lost marker only replays delivered records.
        """
        with self._reading:
            self._ensure_open()
            with self._lock:
                if position > SpoolPosition(self._open_number, self._open_end):
                    raise ValueError(f"cannot commit {position}: past the last record written")
            if self._committed is not None and position < self._committed:
                raise ValueError(f"cannot commit {position}: before {self._committed}")
            if position == self._committed:
                return
            self._committed = position
            self._write_marker(position)
            with self._lock:
                doomed = [
                    number
                    for number, end in self._closed.items()
                    if number < position.segment
                    or (number == position.segment and end <= position.offset)
                ]
                for number in doomed:
                    self._closed_bytes -= self._closed.pop(number)
                self._oldest = self._written_at_after(position)
            self._delete(doomed)

    def sync(self) -> None:
        """Flush appended records and new directory entries to disk now; never raises."""
        errors: list[OSError] = []
        with self._lock:
            descriptors, self._pending = self._pending, []
            if self._dirty and self._fd is not None:
                try:  # a duplicate, so the fsync can run outside the lock while appends go on
                    descriptors.append(os.dup(self._fd))
                except OSError as exc:
                    errors.append(exc)
            dir_dirty = self._dir_dirty
            self._dirty = self._dir_dirty = False
        for fd in descriptors:
            try:
                os.fsync(fd)
            except OSError as exc:
                errors.append(exc)
            finally:
                os.close(fd)
        if dir_dirty:
            try:
                fsync_dir(self._dir)
            except OSError as exc:
                errors.append(exc)
        self._report_sync(errors)

    def close(self) -> None:
        """Stop the fsync thread, flush everything and release the directory; idempotent."""
        self._syncer.stop()
        with self._lock:
            if self._shut:
                return
            self._shut = True
            if self._fd is not None:
                self._pending.append(self._fd)
                self._fd = None
        self.sync()
        os.close(self._lock_fd)

    def stats(self) -> SpoolStats:
        """Bytes and segments on disk, drop and corruption counters, age of the oldest record."""
        with self._lock:
            return SpoolStats(
                bytes=self._closed_bytes + self._open_end,
                segments=len(self._closed) + (0 if self._shut else 1),
                records_dropped=self._dropped,
                corrupt_segments=self._corrupt,
                oldest_written_at=self._oldest,
            )

    # --- writing (self._lock held) ---

    def _write(self, fd: int, header: bytes, payload: bytes, size: int) -> None:
        """Write one record at the end of the open segment, or leave the segment as it was."""
        offset = self._open_end
        try:
            done = os.pwritev(fd, [header, payload], offset)
            if done < size:  # a short write happens only near a full disk; finish or fail
                rest = (header + payload)[done:]
                while rest:
                    wrote = os.pwrite(fd, rest, offset + size - len(rest))
                    if wrote == 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    rest = rest[wrote:]
        except OSError:
            # Writes go at an explicit offset, so if this cut fails too the next record simply
            # overwrites the fragment; recovery cuts whatever is left at the tail.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
            raise

    def _rotate(self, old: int) -> int:
        """Close the open segment ``old`` and open the next one, returned.

        The old segment is fsynced (and closed) by the next sync, not here on the event loop.
        """
        number = self._open_number + 1
        fd = _create_segment(self._dir, number)  # first, so a failure changes nothing
        self._closed[self._open_number] = self._open_end
        self._closed_bytes += self._open_end
        self._pending.append(old)
        self._fd, self._open_number, self._open_end = fd, number, 0
        self._dir_dirty = True
        return fd

    def _drop(self, reason: str, **context: object) -> bool:
        """Count a dropped record; log the first drop of each reason in an episode of drops."""
        self._dropped += 1
        self._episode_drops += 1
        if reason not in self._episode:
            self._episode.add(reason)
            self._log.warning("spool_dropping", reason=reason, **context)
        return False

    def _open_name(self) -> str:
        return segment_name(self._open_number)

    # --- reading (self._reading held) ---

    def _next_range(self, after: SpoolPosition | None) -> tuple[int, int, int, bool] | None:
        """The next segment with records after ``after``: (number, start, end, is it open)."""
        with self._lock:
            return self._next_range_locked(after)

    def _next_range_locked(self, after: SpoolPosition | None) -> tuple[int, int, int, bool] | None:
        for number, end in self._closed.items():
            start = _start_in(number, after)
            if start is not None and start < end:
                return number, start, end, False
        if self._fd is not None:
            start = _start_in(self._open_number, after)
            if start is not None and start < self._open_end:
                return self._open_number, start, self._open_end, True
        return None

    def _read_range(
        self,
        number: int,
        start: int,
        end: int,
        out: list[SpoolRecord],
        *,
        max_records: int,
        budget: int,
    ) -> tuple[bool, int]:
        """Append the good records of ``[start, end)`` to ``out``; (limits reached, budget left).

        Everything below ``end`` was completely written (the writer moves ``end`` only after
        its write returned), so any damage here is real, even in the open segment.
        """
        try:
            fd = os.open(self._dir / segment_name(number), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._lose(number, exc)
            return False, budget
        scanner = Scanner(fd, start, end)
        try:
            while len(out) < max_records:
                record = scanner.next()
                if record is None:
                    break
                if out and len(record.payload) > budget:
                    return True, budget
                out.append(
                    SpoolRecord(
                        SpoolPosition(number, record.end), record.payload, record.written_at
                    )
                )
                budget -= len(record.payload)
            else:
                return True, budget
        except OSError as exc:  # EIO from the disk: a read must not take the shipper down
            self._lose(number, exc)
            return False, budget
        finally:
            os.close(fd)
        if scanner.damage is not None:
            self._quarantine(number, scanner.damage)
        return False, budget

    def _quarantine(self, number: int, damage: Damage) -> None:
        """Move the rest of a damaged segment aside, count it, and read on past it."""
        name = segment_name(number)
        with self._lock:
            if number == self._open_number and self._fd is not None:
                try:
                    self._rotate(self._fd)  # the writer must move on before the file is cut
                except OSError as exc:
                    self._log.error(
                        "spool_quarantine_failed",
                        segment=name,
                        offset=damage.offset,
                        error=_describe(exc),
                    )
                    return
            end = self._closed[number]
        try:
            target: str | None = str(quarantine_tail(self._dir / name, damage.offset))
        except OSError as exc:
            # The bytes stay in the file; the reader still skips them, and the next start-up
            # or read of this segment meets them again and retries.
            self._log.error(
                "spool_quarantine_failed", segment=name, offset=damage.offset, error=_describe(exc)
            )
            target = None
        with self._lock:
            self._closed[number] = damage.offset
            self._closed_bytes -= end - damage.offset
            self._corrupt += 1
        self._log.error(
            "spool_segment_corrupt",
            segment=name,
            offset=damage.offset,
            reason=damage.reason,
            quarantined=target,
            bytes_quarantined=end - damage.offset,
        )

    def _lose(self, number: int, exc: OSError) -> None:
        """A segment vanished or cannot be read: skip it rather than stall the reader on it.

        A closed one is forgotten until the next start-up, which finds it again if it is still
        there; the open one is retried by the next read.
        """
        with self._lock:
            if number != self._open_number:
                self._closed_bytes -= self._closed.pop(number, 0)
        self._log.error(
            "spool_segment_unreadable", segment=segment_name(number), error=_describe(exc)
        )

    # --- committing (self._reading held) ---

    def _write_marker(self, position: SpoolPosition) -> None:
        try:
            write_marker(self._dir, position.segment, position.offset)
        except OSError as exc:
            if not self._commit_failing:
                self._log.error("spool_commit_failed", position=str(position), error=_describe(exc))
            self._commit_failing = True
        else:
            self._commit_failing = False

    def _delete(self, numbers: list[int]) -> None:
        for number in numbers:
            try:
                (self._dir / segment_name(number)).unlink(missing_ok=True)
            except OSError as exc:  # left behind; the next start-up deletes it (it is consumed)
                self._log.error(
                    "spool_delete_failed", segment=segment_name(number), error=_describe(exc)
                )
        if numbers:
            try:
                fsync_dir(self._dir)
            except OSError as exc:
                self._log.error("spool_fsync_failed", error=_describe(exc))

    def _written_at_after(self, position: SpoolPosition | None) -> float | None:
        """``written_at`` of the first record after ``position`` (``self._lock`` held)."""
        found = self._next_range_locked(position)
        if found is None:
            return None
        number, start, _, _ = found
        try:
            fd = os.open(self._dir / segment_name(number), os.O_RDONLY | os.O_CLOEXEC)
            try:
                return header_written_at(fd, start)
            finally:
                os.close(fd)
        except OSError:
            return None

    def _ensure_open(self) -> None:
        if self._shut:
            raise ValueError("the spool is closed")

    def _report_sync(self, errors: list[OSError]) -> None:
        """Log the first fsync failure of a run of failures, and the recovery after it."""
        if errors and not self._sync_failing:
            self._log.error("spool_fsync_failed", error=_describe(errors[0]))
        elif not errors and self._sync_failing:
            self._log.info("spool_fsync_recovered")
        self._sync_failing = bool(errors)


def _check_arguments(max_bytes: int, segment_bytes: int, fsync_interval: float) -> None:
    problems = []
    if max_bytes < 4 * _MIN_SEGMENT_BYTES:
        problems.append(f"max_bytes must be at least {4 * _MIN_SEGMENT_BYTES}, got {max_bytes}")
    if segment_bytes < 1:
        problems.append(f"segment_bytes must be positive, got {segment_bytes}")
    if not 0 < fsync_interval < float("inf"):
        problems.append(
            f"fsync_interval must be a positive number of seconds, got {fsync_interval}"
        )
    if problems:
        raise ValueError("; ".join(problems))


def _claim_directory(directory: Path) -> int:
    """Create the directory if needed and take its lock; ``ConfigError`` says why it is unusable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError({SETTING: f"{directory} exists and is not a directory"}) from exc
    except OSError as exc:
        raise ConfigError({SETTING: f"cannot create {directory}: {_describe(exc)}"}) from exc
    if not directory.is_dir():
        raise ConfigError({SETTING: f"{directory} is not a directory"})
    try:
        return lock_directory(directory)
    except BlockingIOError as exc:
        raise ConfigError(
            {SETTING: f"{directory} is in use by another spool (spool.lock is held)"}
        ) from exc
    except OSError as exc:
        raise ConfigError({SETTING: f"cannot write in {directory}: {_describe(exc)}"}) from exc


def _create_segment(directory: Path, number: int) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    return os.open(directory / segment_name(number), flags, 0o644)


def _start_in(number: int, after: SpoolPosition | None) -> int | None:
    """Where reading starts in segment ``number`` for records after ``after``; None: not at all."""
    if after is None or number > after.segment:
        return 0
    return after.offset if number == after.segment else None


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name}: {exc.strerror}" if name and exc.strerror else str(exc)
