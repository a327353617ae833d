"""What the spool finds on disk at start-up, made consistent before the first append.

Only the newest segment can end in a half-written record (it was the open one when the last
process stopped), so only its tail is checked here: a record cut short is cut off, anything else
wrong is quarantined. Older segments were complete when they were closed; damage in them is
found, and quarantined, when they are read. Segments wholly before the progress marker (a crash
between writing the marker and deleting them) and empty segments are deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from sidecar._spool_files import fsync_dir, quarantine_tail, read_marker
from sidecar._spool_format import (
    CORRUPT_SUFFIX,
    SEGMENT_SUFFIX,
    Scanner,
    segment_name,
    segment_number,
)


@dataclass(frozen=True, slots=True)
class Recovered:
    """The spool's state on disk after recovery.

    ``segments`` maps each remaining segment number to its size, ascending; ``next_segment`` is
    above every number seen (segments, quarantine files and the marker), so positions only grow.
    """

    segments: dict[int, int]
    marker: tuple[int, int] | None
    next_segment: int
    corrupt_segments: int


def recover(directory: Path, logger: FilteringBoundLogger) -> Recovered:
    """Check the newest segment's tail, drop consumed and empty segments; raises ``OSError``."""
    numbers: list[int] = []
    highest = 0
    for path in directory.iterdir():
        number = segment_number(path)
        if number is not None:
            numbers.append(number)
        elif path.name.endswith(SEGMENT_SUFFIX + CORRUPT_SUFFIX):
            quarantined = segment_number(path.with_name(path.name.removesuffix(CORRUPT_SUFFIX)))
            highest = max(highest, quarantined or 0)
    numbers.sort()
    marker = _load_marker(directory, logger)
    highest = max([highest, *numbers, marker[0] if marker else 0])
    sizes = {number: (directory / segment_name(number)).stat().st_size for number in numbers}
    corrupt = 0
    if numbers:
        newest = numbers[-1]
        sizes[newest], damaged = _repair_tail(directory / segment_name(newest), logger)
        corrupt += damaged
    doomed = [
        number for number, size in sizes.items() if size == 0 or _consumed(number, size, marker)
    ]
    for number in doomed:
        (directory / segment_name(number)).unlink()
        del sizes[number]
    if doomed:
        fsync_dir(directory)
    return Recovered(sizes, marker, highest + 1, corrupt)


def _load_marker(directory: Path, logger: FilteringBoundLogger) -> tuple[int, int] | None:
    """The progress marker, or None (from the oldest record on) when it is unreadable."""
    try:
        return read_marker(directory)
    except ValueError as exc:
        # Starting over only replays records; their documents carry their event ids as _id, so
        # Elasticsearch answers 409 for each one already delivered.
        logger.error("spool_marker_corrupt", directory=str(directory), reason=str(exc))
        return None


def _consumed(number: int, size: int, marker: tuple[int, int] | None) -> bool:
    if marker is None:
        return False
    segment, offset = marker
    return number < segment or (number == segment and size <= offset)


def _repair_tail(path: Path, logger: FilteringBoundLogger) -> tuple[int, int]:
    """Cut or quarantine what follows the last good record; returns (new size, corrupt count)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        scanner = Scanner(fd, 0, size)
        while scanner.next() is not None:
            pass
    finally:
        os.close(fd)
    damage = scanner.damage
    if damage is None:
        return size, 0
    if damage.truncated:
        # What a crash during a write leaves: the record was never acknowledged, so nothing
        # that was promised is lost by cutting it off.
        os.truncate(path, damage.offset)
        _fsync_file(path)
        logger.warning(
            "spool_tail_truncated",
            segment=path.name,
            offset=damage.offset,
            bytes_dropped=size - damage.offset,
            reason=damage.reason,
        )
        return damage.offset, 0
    target = quarantine_tail(path, damage.offset)
    logger.error(
        "spool_segment_corrupt",
        segment=path.name,
        offset=damage.offset,
        reason=damage.reason,
        quarantined=str(target),
        bytes_quarantined=size - damage.offset,
    )
    return damage.offset, 1


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
