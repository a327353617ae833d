"""The bytes of a spool segment: how one record is framed and how a run of records is checked.

A segment is records back to back, nothing else. A record is a 22-byte header and its payload::

    magic "MWSP" | version u16 | payload length u32 | written_at f64 | crc32 u32 | payload

little-endian, no padding. The CRC (``zlib.crc32``) covers the header fields before it *and*
the payload, so a flipped bit in the length or the timestamp is caught as well as one in the
data. This module never writes files and never decides what to do about damage; it reports where
the good bytes end and why (``Damage``), and ``sidecar.spool`` acts on it.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"MWSP"
VERSION = 1
HEADER = struct.Struct("<4sHIdI")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 0xFFFFFFFF
"""The length field is 32 bits; the spool's ``max_bytes`` keeps real payloads far below it."""

_PREFIX = struct.Struct("<4sHId")  # the header without its CRC: what the CRC starts from
_CHUNK = 1 << 20  # read-ahead per pread; records smaller than this cost no extra syscall
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
SEGMENT_SUFFIX = ".seg"
CORRUPT_SUFFIX = ".corrupt"


def segment_name(number: int) -> str:
    """The file name of segment ``number``: 20 digits so names sort like numbers."""
    return f"{number:020d}{SEGMENT_SUFFIX}"


def segment_number(path: Path) -> int | None:
    """The number in a segment file's name, or None for any other file."""
    match = _SEGMENT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def encode_header(payload: bytes, written_at: float) -> bytes:
    """The header that frames ``payload``; the caller writes it and the payload in one call."""
    prefix = _PREFIX.pack(MAGIC, VERSION, len(payload), written_at)
    crc = zlib.crc32(payload, zlib.crc32(prefix))
    return prefix + crc.to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class Scanned:
    """One good record: where it ends in its segment, its payload and when it was written."""

    end: int
    payload: bytes
    written_at: float


@dataclass(frozen=True, slots=True)
class Damage:
    """Where the good bytes of a segment stop, and why.

    ``truncated`` is True when the bytes simply end inside a record (what a crash in the middle
    of a write leaves behind); False when bytes are present but wrong (bad magic, version or CRC).
    """

    offset: int
    reason: str
    truncated: bool


class Scanner:
    """Reads the records of one segment file from ``start`` up to ``end``, checking each.

    ``next()`` returns the next good record, or None at ``end`` or at the first bad one; after
    None, ``damage`` says whether the bytes stopped cleanly (None) or where and why not. Reads are
    ``pread`` calls of up to 1 MiB, so a run of small records costs one syscall per megabyte.
    """

    def __init__(self, fd: int, start: int, end: int) -> None:
        self._fd = fd
        self._end = end
        self.offset = start
        self.damage: Damage | None = None
        self._buf = b""
        self._buf_at = start

    def next(self) -> Scanned | None:
        """The next good record, advancing past it; None at the end or at damage."""
        offset = self.offset
        if offset >= self._end or self.damage is not None:
            return None
        head = self._take(offset, HEADER_SIZE)
        if len(head) < HEADER_SIZE:
            self._damaged(offset, "truncated header", truncated=True)
            return None
        magic, version, length, written_at, crc = HEADER.unpack(head)
        if magic != MAGIC:
            self._damaged(offset, "bad magic", truncated=False)
            return None
        if version != VERSION:
            self._damaged(offset, f"unknown record version {version}", truncated=False)
            return None
        end = offset + HEADER_SIZE + length
        if end > self._end:
            self._damaged(offset, "truncated payload", truncated=True)
            return None
        payload = self._take(offset + HEADER_SIZE, length)
        if len(payload) < length:  # the file is shorter than the caller believed
            self._damaged(offset, "truncated payload", truncated=True)
            return None
        if zlib.crc32(payload, zlib.crc32(head[: _PREFIX.size])) != crc:
            self._damaged(offset, "crc mismatch", truncated=False)
            return None
        self.offset = end
        return Scanned(end, payload, float(written_at))

    def _damaged(self, offset: int, reason: str, *, truncated: bool) -> None:
        self.damage = Damage(offset, reason, truncated)

    def _take(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file or of the readable range)."""
        size = max(0, min(size, self._end - offset))
        start = offset - self._buf_at
        if start >= 0 and start + size <= len(self._buf):
            return self._buf[start : start + size]
        if size >= _CHUNK:  # a big payload: read it alone rather than through the buffer
            return pread_exact(self._fd, size, offset)
        self._buf = pread_exact(self._fd, min(_CHUNK, self._end - offset), offset)
        self._buf_at = offset
        return self._buf[:size]


def header_written_at(fd: int, offset: int) -> float | None:
    """The ``written_at`` of the record whose header starts at ``offset``, if it looks like one.

    Only the magic is checked: this serves the ``oldest_written_at`` statistic, where reading the
    whole record to check its CRC would cost too much and a wrong answer costs little.
    """
    head = pread_exact(fd, HEADER_SIZE, offset)
    if len(head) < HEADER_SIZE:
        return None
    magic, _, _, written_at, _ = HEADER.unpack(head)
    return float(written_at) if magic == MAGIC else None


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, fewer only at the end of the file (pread may return short)."""
    first = os.pread(fd, size, offset)
    if len(first) == size or not first:
        return first
    parts = [first]
    got = len(first)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
