"""File-system steps of the spool that must survive a crash (marker, quarantine, locks).

The progress marker, quarantine of damaged bytes, directory fsyncs and the single-writer lock.

Each helper does one durable step in the order that makes it atomic (write a temporary file,
fsync it, rename it over the old one, fsync the directory). None of them logs or counts; they
raise ``OSError`` and ``sidecar.spool`` decides what that means.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import orjson

MARKER_NAME = "committed.json"
LOCK_NAME = "spool.lock"
_MARKER_VERSION = 1
_COPY_CHUNK = 1 << 20


def fsync_dir(directory: Path) -> None:
    """Make creations, renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_directory(directory: Path) -> int:
    """Take the spool's exclusive lock (a ``flock`` the kernel drops when the process dies).

    Returns the lock file's descriptor; closing it releases the lock. Raises ``BlockingIOError``
    when another process (or another ``Spool`` in this one) holds it.
    """
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_marker(directory: Path, segment: int, offset: int) -> None:
    """Replace the progress marker atomically: readers see the old one or the new one, whole."""
    body = orjson.dumps({"version": _MARKER_VERSION, "segment": segment, "offset": offset})
    final = directory / MARKER_NAME
    temporary = directory / (MARKER_NAME + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    fsync_dir(directory)


def read_marker(directory: Path) -> tuple[int, int] | None:
    """The ``(segment, offset)`` in the marker; None when there is none yet.

    Raises ``ValueError`` naming what is wrong when the file exists but is not a marker.
    """
    try:
        body = (directory / MARKER_NAME).read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != _MARKER_VERSION:
        raise ValueError(f"expected an object with version {_MARKER_VERSION}")
    segment, offset = data.get("segment"), data.get("offset")
    # type() rather than isinstance(): JSON true/false must not pass for 1/0
    if type(segment) is not int or type(offset) is not int or segment < 0 or offset < 0:
        raise ValueError("segment and offset must be non-negative integers")
    return segment, offset


def quarantine_tail(segment: Path, offset: int) -> Path:
    """Move the bytes of ``segment`` from ``offset`` on into ``<segment>.corrupt``; keep the rest.

    The copy is made durable before the segment is cut, so a crash in between leaves the bytes
    in both places rather than in neither. An older quarantine file of the same segment is
    replaced. Returns the quarantine file's path.
    """
    target = segment.with_name(segment.name + ".corrupt")
    src = os.open(segment, os.O_RDWR | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            position = offset
            while chunk := os.pread(src, _COPY_CHUNK, position):
                write_all(dst, chunk)
                position += len(chunk)
            os.fsync(dst)
        finally:
            os.close(dst)
        os.ftruncate(src, offset)
        os.fsync(src)
    finally:
        os.close(src)
    fsync_dir(segment.parent)
    return target


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the descriptor's position; a short write is continued."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
