"""Tests of the disk spool on real files: ordering, commits, crash recovery, corruption, limits."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import LogCapture
from structlog.typing import FilteringBoundLogger

from sidecar import spool as spool_module
from sidecar._spool_format import HEADER_SIZE
from sidecar.errors import ConfigError
from sidecar.spool import Spool, SpoolPosition, SpoolRecord

REPO = Path(__file__).resolve().parents[2]
SMALL = {"segment_bytes": 4096, "max_bytes": 1 << 24}
"""Tiny segments, so a few hundred records span many of them."""


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = 1_795_597_200.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _logger() -> tuple[FilteringBoundLogger, LogCapture]:
    capture = LogCapture()
    logger = structlog.wrap_logger(
        structlog.testing.CapturingLogger(),
        processors=[structlog.processors.add_log_level, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    return logger, capture


def _events(capture: LogCapture, name: str) -> list[dict[str, object]]:
    return [entry for entry in capture.entries if entry["event"] == name]


def _payload(number: int, size: int = 100) -> bytes:
    return b"%08d" % number + bytes([number % 251]) * max(0, size - 8)


def _read_all(spool: Spool, after: SpoolPosition | None = None) -> list[SpoolRecord]:
    out: list[SpoolRecord] = []
    while batch := spool.read(after, max_records=64, max_bytes=1 << 20):
        out.extend(batch)
        after = batch[-1].position
    return out


def _numbers(records: list[SpoolRecord]) -> list[int]:
    return [int(record.payload[:8]) for record in records]


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A fresh spool directory."""
    return tmp_path / "spool"


@pytest.fixture
def opened(spool_dir: Path) -> Iterator[list[Spool]]:
    """Spools opened by a test, closed at its end even when it fails."""
    spools: list[Spool] = []
    yield spools
    for spool in spools:
        spool.close()


def _open(spools: list[Spool], directory: Path, **options: object) -> Spool:
    spool = Spool(directory, **options)  # type: ignore[arg-type]
    spools.append(spool)
    return spool


# --- round trip and order ---


@settings(max_examples=40)
@given(sizes=st.lists(st.integers(min_value=8, max_value=3000), min_size=1, max_size=80))
def test_round_trip_across_many_segments(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int]
) -> None:
    """Every appended payload is read back byte for byte, in order, across segment boundaries."""
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, **SMALL)  # type: ignore[arg-type]
    try:
        payloads = [_payload(i, size) for i, size in enumerate(sizes)]
        assert all(spool.append(payload) for payload in payloads)
        records = _read_all(spool)
        assert [record.payload for record in records] == payloads
        positions = [record.position for record in records]
        assert positions == sorted(positions)
        assert len({position.segment for position in positions}) == len(_segments(directory))
    finally:
        spool.close()


def test_read_respects_record_and_byte_limits(opened: list[Spool], spool_dir: Path) -> None:
    """A read stops at max_records or before max_bytes of payload, and the next read goes on."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(30):
        spool.append(_payload(i, 100))
    first = spool.read(None, max_records=7, max_bytes=1 << 20)
    second = spool.read(first[-1].position, max_records=100, max_bytes=350)
    assert _numbers(first) == list(range(7))
    assert _numbers(second) == [7, 8, 9]


def test_one_record_larger_than_max_bytes_is_still_returned(
    opened: list[Spool], spool_dir: Path
) -> None:
    """A record bigger than the read's byte budget comes back alone rather than stalling."""
    spool = _open(opened, spool_dir, **SMALL)
    spool.append(_payload(0, 5000))
    spool.append(_payload(1, 10))
    records = spool.read(None, max_records=10, max_bytes=100)
    assert _numbers(records) == [0]


def test_record_larger_than_a_segment_gets_one_of_its_own(
    opened: list[Spool], spool_dir: Path
) -> None:
    """A payload over segment_bytes is written whole into a fresh segment."""
    spool = _open(opened, spool_dir, **SMALL)
    spool.append(_payload(0, 100))
    spool.append(_payload(1, 9000))
    spool.append(_payload(2, 100))
    records = _read_all(spool)
    assert _numbers(records) == [0, 1, 2]
    assert [r.position.segment for r in records] == [1, 2, 3]


def test_read_limits_must_be_positive(opened: list[Spool], spool_dir: Path) -> None:
    """A read asking for no records at all is a caller error."""
    spool = _open(opened, spool_dir)
    with pytest.raises(ValueError, match="max_records"):
        spool.read(None, max_records=0, max_bytes=10)


# --- commit and reopen ---


def test_commit_deletes_consumed_segments_and_survives_reopen(
    opened: list[Spool], spool_dir: Path
) -> None:
    """Segments wholly before the committed position are deleted; the marker is read back."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(200):
        spool.append(_payload(i))
    records = _read_all(spool)
    middle = records[120].position
    before = len(_segments(spool_dir))
    spool.commit(middle)
    remaining = _segments(spool_dir)
    assert len(remaining) < before
    assert min(int(path.stem) for path in remaining) == middle.segment
    spool.close()
    again = _open(opened, spool_dir, **SMALL)
    assert again.committed() == middle


def test_reopen_resumes_with_exactly_the_uncommitted_records(
    opened: list[Spool], spool_dir: Path
) -> None:
    """After a reopen, reading from the marker yields each uncommitted record once, then new."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(150):
        spool.append(_payload(i))
    spool.commit(_read_all(spool)[89].position)
    spool.close()
    again = _open(opened, spool_dir, **SMALL)
    again.append(_payload(150))
    assert _numbers(_read_all(again, again.committed())) == list(range(90, 151))


def test_commit_of_everything_leaves_only_the_open_segment(
    opened: list[Spool], spool_dir: Path
) -> None:
    """Committing the last record deletes every closed segment and empties the stats."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(100):
        spool.append(_payload(i))
    spool.commit(_read_all(spool)[-1].position)
    stats = spool.stats()
    assert (stats.segments, stats.oldest_written_at) == (1, None)
    assert len(_segments(spool_dir)) == 1


def test_commit_refuses_to_go_backwards_or_past_the_end(
    opened: list[Spool], spool_dir: Path
) -> None:
    """A commit before the marker or beyond the last write is a caller error."""
    spool = _open(opened, spool_dir)
    spool.append(b"a")
    spool.append(b"b")
    first, second = (record.position for record in _read_all(spool))
    spool.commit(second)
    with pytest.raises(ValueError, match="before"):
        spool.commit(first)
    with pytest.raises(ValueError, match="past the last record"):
        spool.commit(SpoolPosition(second.segment, second.offset + 1))


def test_corrupt_marker_restarts_from_the_oldest_record(
    opened: list[Spool], spool_dir: Path
) -> None:
    """An unreadable marker is logged and reading starts over from the oldest segment."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(10):
        spool.append(_payload(i))
    spool.commit(_read_all(spool)[4].position)
    spool.close()
    (spool_dir / "committed.json").write_bytes(b'{"version": 1, "segm')
    logger, capture = _logger()
    again = _open(opened, spool_dir, logger=logger, **SMALL)
    assert again.committed() is None
    assert _numbers(_read_all(again))[:10] == list(range(10))
    assert _events(capture, "spool_marker_corrupt")[0]["log_level"] == "error"


def test_numbering_continues_after_the_highest_segment(
    opened: list[Spool], spool_dir: Path
) -> None:
    """A reopened spool writes to a segment numbered above every one before it."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(100):
        spool.append(_payload(i))
    highest = max(int(path.stem) for path in _segments(spool_dir))
    spool.close()
    again = _open(opened, spool_dir, **SMALL)
    again.append(_payload(100))
    assert _read_all(again)[-1].position.segment == highest + 1


# --- crashes and corruption ---


def _last_record_bounds(directory: Path) -> tuple[Path, int, int]:
    """The newest segment, and where its last record starts and ends."""
    segment = _segments(directory)[-1]
    size = segment.stat().st_size
    return segment, size - HEADER_SIZE - 40, size


def test_truncated_tail_is_cut_at_every_byte_offset(tmp_path: Path) -> None:
    """A crash cutting the last record at any byte leaves every earlier record and no corruption."""
    source = tmp_path / "source"
    spool = Spool(source, **SMALL)  # type: ignore[arg-type]
    for i in range(5):
        spool.append(_payload(i, 40))
    spool.close()
    segment, start, end = _last_record_bounds(source)
    for cut in range(start, end):
        directory = tmp_path / f"cut{cut}"
        shutil.copytree(source, directory)
        os.truncate(directory / segment.name, cut)
        logger, capture = _logger()
        reopened = Spool(directory, logger=logger, **SMALL)  # type: ignore[arg-type]
        try:
            reopened.append(_payload(99, 40))
            assert _numbers(_read_all(reopened)) == [0, 1, 2, 3, 99], cut
            assert reopened.stats().corrupt_segments == 0
            assert (directory / segment.name).stat().st_size == start
            assert bool(_events(capture, "spool_tail_truncated")) == (cut > start)
        finally:
            reopened.close()


def test_garbage_tail_at_start_up_is_quarantined(opened: list[Spool], spool_dir: Path) -> None:
    """Bytes after the last record that are not a record are moved aside and counted."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(3):
        spool.append(_payload(i, 40))
    spool.close()
    segment = _segments(spool_dir)[-1]
    with segment.open("ab") as file:
        file.write(b"\0" * 100)
    again = _open(opened, spool_dir, **SMALL)
    assert _numbers(_read_all(again)) == [0, 1, 2]
    assert again.stats().corrupt_segments == 1
    assert (spool_dir / (segment.name + ".corrupt")).read_bytes() == b"\0" * 100


@settings(max_examples=60)
@given(
    record=st.integers(min_value=0, max_value=9),
    byte=st.integers(min_value=0, max_value=HEADER_SIZE + 99),
    flip=st.integers(min_value=1, max_value=255),
)
def test_flipped_byte_in_a_closed_segment_is_quarantined(
    tmp_path_factory: pytest.TempPathFactory, record: int, byte: int, flip: int
) -> None:
    """A changed byte in a record quarantines the rest of its segment; the others still read."""
    directory = tmp_path_factory.mktemp("spool")
    logger, capture = _logger()
    spool = Spool(directory, logger=logger, **SMALL)  # type: ignore[arg-type]
    try:
        for i in range(100):
            spool.append(_payload(i, 100))
        damaged = _segments(directory)[1]
        per_segment = 4096 // (HEADER_SIZE + 100)
        offset = record * (HEADER_SIZE + 100) + byte
        data = bytearray(damaged.read_bytes())
        data[offset] ^= flip
        damaged.write_bytes(bytes(data))
        numbers = _numbers(_read_all(spool))
        lost = range(per_segment + record, 2 * per_segment)
        assert numbers == [i for i in range(100) if i not in lost]
        assert spool.stats().corrupt_segments == 1
        assert (directory / (damaged.name + ".corrupt")).stat().st_size == len(lost) * (
            HEADER_SIZE + 100
        )
        (event,) = _events(capture, "spool_segment_corrupt")
        assert (event["segment"], event["offset"]) == (damaged.name, record * (HEADER_SIZE + 100))
    finally:
        spool.close()


def test_damage_in_the_open_segment_moves_the_writer_on(
    opened: list[Spool], spool_dir: Path
) -> None:
    """Corruption found in the segment being written is quarantined and appends continue."""
    spool = _open(opened, spool_dir, segment_bytes=1 << 20, max_bytes=1 << 24)
    for i in range(5):
        spool.append(_payload(i))
    (segment,) = _segments(spool_dir)
    fd = os.open(segment, os.O_WRONLY)
    try:
        os.pwrite(fd, b"X", 2 * (HEADER_SIZE + 100) + HEADER_SIZE)
    finally:
        os.close(fd)
    assert _numbers(_read_all(spool)) == [0, 1]
    assert spool.append(_payload(5))
    assert _numbers(_read_all(spool)) == [0, 1, 5]
    assert spool.stats().corrupt_segments == 1


def test_partial_record_being_written_is_not_yet_there(
    opened: list[Spool], spool_dir: Path
) -> None:
    """Bytes past the last completed append are neither returned nor treated as damage."""
    spool = _open(opened, spool_dir)
    spool.append(_payload(0))
    (segment,) = _segments(spool_dir)
    with segment.open("ab") as file:
        file.write(b"MWSP\x01\x00")  # the start of a header a writer has not finished
    assert _numbers(_read_all(spool)) == [0]
    assert spool.stats().corrupt_segments == 0


_WRITER = """
import sys
from pathlib import Path
from sidecar.logs import configure_logging
from sidecar.spool import Spool

configure_logging(stream=sys.stderr)
spool = Spool(Path(sys.argv[1]), segment_bytes=8192, fsync_interval=60.0)
count = 0
while True:
    if spool.append(b"%08d" % count + b"x" * (count % 300)):
        count += 1
        sys.stdout.write(f"{count}\\n")
        sys.stdout.flush()
"""


def test_every_acknowledged_record_survives_sigkill(opened: list[Spool], spool_dir: Path) -> None:
    """Records whose append returned before the writer was SIGKILLed are all read back, in order."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(spool_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None
    deadline = time.monotonic() + 60
    try:
        for line in writer.stdout:
            if int(line) >= 3000 or time.monotonic() > deadline:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        rest, errors = writer.communicate()
    acknowledged = int(rest.split()[-1]) if rest.split() else int(line)
    assert writer.returncode == -signal.SIGKILL, errors
    numbers = _numbers(_read_all(_open(opened, spool_dir)))
    assert numbers == list(range(len(numbers)))
    assert len(numbers) >= acknowledged >= 3000


# --- limits, errors, statistics ---


def test_full_spool_drops_counts_and_logs_once_per_episode(
    opened: list[Spool], spool_dir: Path
) -> None:
    """Appends past max_bytes return False and are counted; an episode is logged once."""
    logger, capture = _logger()
    spool = _open(opened, spool_dir, max_bytes=16384, segment_bytes=4096, logger=logger)
    accepted = [spool.append(_payload(i, 1000)) for i in range(30)]
    kept = accepted.count(True)
    assert accepted == [True] * kept + [False] * (30 - kept)
    assert spool.stats().records_dropped == 30 - kept
    assert spool.stats().bytes <= 16384
    assert len(_events(capture, "spool_dropping")) == 1
    spool.commit(_read_all(spool)[-1].position)
    assert spool.append(_payload(30, 1000))
    assert _events(capture, "spool_accepting_again")[0]["dropped"] == 30 - kept


def test_disk_error_on_append_is_a_counted_drop(
    opened: list[Spool], spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ENOSPC from the write returns False, is counted and logged, and leaves no fragment."""
    logger, capture = _logger()
    spool = _open(opened, spool_dir, logger=logger)
    spool.append(_payload(0))
    real = os.pwritev

    def half_then_full(fd: int, buffers: list[bytes], offset: int) -> int:
        os.pwrite(fd, buffers[0], offset)  # a fragment reaches the file before the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "pwritev", half_then_full)
    assert not spool.append(_payload(1))
    assert not spool.append(_payload(2))
    monkeypatch.setattr(spool_module.os, "pwritev", real)
    assert spool.append(_payload(3))
    assert _numbers(_read_all(spool)) == [0, 3]
    assert spool.stats().records_dropped == 2
    (event,) = _events(capture, "spool_dropping")
    assert event["reason"] == "write_failed"
    assert "ENOSPC" in str(event["error"])


def test_oldest_written_at_follows_commits(opened: list[Spool], spool_dir: Path) -> None:
    """The oldest uncommitted record's append time is reported, also after a reopen."""
    clock = FakeClock()
    spool = _open(opened, spool_dir, clock=clock, **SMALL)
    assert spool.stats().oldest_written_at is None
    for i in range(100):
        clock.now += 1
        spool.append(_payload(i))
    start = clock.now - 99
    records = _read_all(spool)
    assert spool.stats().oldest_written_at == start
    spool.commit(records[59].position)
    assert spool.stats().oldest_written_at == start + 60
    spool.close()
    again = _open(opened, spool_dir, clock=clock, **SMALL)
    assert again.stats().oldest_written_at == start + 60
    assert [r.written_at for r in _read_all(again, again.committed())][:2] == [
        start + 60,
        start + 61,
    ]


def test_stats_count_bytes_and_segments_on_disk(opened: list[Spool], spool_dir: Path) -> None:
    """The bytes and segments reported match the segment files in the directory."""
    spool = _open(opened, spool_dir, **SMALL)
    for i in range(70):
        spool.append(_payload(i))
    stats = spool.stats()
    files = _segments(spool_dir)
    assert stats.segments == len(files)
    assert stats.bytes == sum(path.stat().st_size for path in files) == 70 * (HEADER_SIZE + 100)


def test_background_thread_fsyncs_appended_records(
    opened: list[Spool], spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within fsync_interval of an append the open segment is fsynced without a sync() call."""
    synced: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(spool_module.os, "fsync", counting)
    spool = _open(opened, spool_dir, fsync_interval=0.01)
    spool.append(b"x")
    deadline = time.monotonic() + 10
    while not synced and time.monotonic() < deadline:
        time.sleep(0.005)
    assert synced


def test_append_after_close_is_a_counted_drop(opened: list[Spool], spool_dir: Path) -> None:
    """A late append during shutdown returns False instead of raising."""
    spool = _open(opened, spool_dir)
    spool.close()
    assert not spool.append(b"late")
    assert spool.stats().records_dropped == 1


def test_unusable_directory_is_a_config_error(tmp_path: Path) -> None:
    """A spool directory that cannot be created names MODELWATCH_SPOOL_DIR and the reason."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        Spool(blocker / "spool")
    assert "MODELWATCH_SPOOL_DIR" in caught.value.problems


def test_second_spool_on_one_directory_is_refused(opened: list[Spool], spool_dir: Path) -> None:
    """Two writers in one directory would interleave segments, so the second is refused."""
    _open(opened, spool_dir)
    with pytest.raises(ConfigError, match="in use"):
        Spool(spool_dir)


def test_invalid_sizes_are_rejected(tmp_path: Path) -> None:
    """Sizes and intervals that cannot work are refused with the parameter named."""
    with pytest.raises(ValueError, match="fsync_interval"):
        Spool(tmp_path, fsync_interval=0)


# --- concurrency ---


def test_concurrent_append_read_and_commit_lose_and_repeat_nothing(
    opened: list[Spool], spool_dir: Path
) -> None:
    """A writer thread and a reader committing as it goes see every record exactly once."""
    spool = _open(opened, spool_dir, **SMALL)
    total = 3000
    appended = threading.Event()

    def write() -> None:
        for i in range(total):
            assert spool.append(_payload(i, 8 + i % 200))
        appended.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    position = None
    deadline = time.monotonic() + 60
    while len(seen) < total and time.monotonic() < deadline:
        batch = spool.read(position, max_records=37, max_bytes=4000)
        if not batch:
            time.sleep(0.001)  # polling: give the writer the GIL
            continue
        seen.extend(_numbers(batch))
        position = batch[-1].position
        spool.commit(position)
    writer.join()
    assert appended.is_set()
    assert seen == list(range(total))
    assert spool.stats().segments == 1
    assert spool.stats().records_dropped == 0


def test_vanished_segment_is_skipped_and_logged(opened: list[Spool], spool_dir: Path) -> None:
    """A closed segment deleted behind the spool's back is logged and reading goes on past it."""
    logger, capture = _logger()
    spool = _open(opened, spool_dir, logger=logger, **SMALL)
    for i in range(100):
        spool.append(_payload(i))
    first, second = _segments(spool_dir)[:2]
    second.unlink()
    per_segment = 4096 // (HEADER_SIZE + 100)
    numbers = _numbers(_read_all(spool))
    assert numbers == [i for i in range(100) if not per_segment <= i < 2 * per_segment]
    assert _events(capture, "spool_segment_unreadable")[0]["segment"] == second.name
    assert first.exists()
