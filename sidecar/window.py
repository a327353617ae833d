"""A sliding time window of bin counts, kept as a fixed ring of per-slot count vectors.

Time is cut into slots of ``slot_seconds``; the window is the newest
``ceil(window_seconds / slot_seconds)`` slots, the current (partly elapsed) one included. Each
slot holds one count vector, and a running sum over the live slots is kept up to date: a write
adds to it and an expiring slot is subtracted once. Memory is fixed at construction and never
grows with traffic: it is ``slots × width × 8`` bytes, which is why the slot count is capped at
``MAX_SLOTS``. Time is the arrival time read from an injected clock, never an event's own
timestamp, so a client's clock cannot evict or pin data (see ``docs/statistics.md``).

Not thread-safe on its own: the owner (the drift engine) holds a lock around every call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

MAX_SLOTS = 1000
"""Most slots a window may have. Each slot holds one int64 per bin of every monitored column, so
a model version with 2 000 bins and 1 000 slots already takes 16 MB; an unbounded count lets a
typo in the slot length (0.001 for 60) ask for terabytes at start-up."""


def slot_count(window_seconds: float, slot_seconds: float) -> int:
    """Slots of a ``window_seconds`` window cut into ``slot_seconds`` (the last may be partial)."""
    return math.ceil(window_seconds / slot_seconds)


class SlidingWindow:
    """Counts over the last ``window_seconds`` of arrival time, in ``width`` bins."""

    def __init__(
        self,
        width: int,
        window_seconds: float = 3600.0,
        slot_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if width < 0:
            raise ValueError(f"width: must not be negative, got {width}")
        if not (math.isfinite(slot_seconds) and slot_seconds > 0):
            raise ValueError(f"slot_seconds: must be a positive number, got {slot_seconds}")
        if not (math.isfinite(window_seconds) and window_seconds >= slot_seconds):
            raise ValueError(
                f"window_seconds: must be at least slot_seconds ({slot_seconds}), "
                f"got {window_seconds}"
            )
        slots = slot_count(window_seconds, slot_seconds)
        if slots > MAX_SLOTS:
            raise ValueError(
                f"window_seconds / slot_seconds: {window_seconds} / {slot_seconds} gives {slots} "
                f"slots; at most {MAX_SLOTS} are allowed"
            )
        self.width = width
        self.window_seconds = float(window_seconds)
        self.slot_seconds = float(slot_seconds)
        self.slots = slots
        self._clock = clock
        self._counts = np.zeros((self.slots, width), dtype=np.int64)
        self._slot_events = np.zeros(self.slots, dtype=np.int64)
        self._totals = np.zeros(width, dtype=np.int64)
        self._events = 0
        self._head: int | None = None
        """Absolute index of the newest slot written or expired up to; rows hold slots after
        ``_head - slots``."""

    def _slot_now(self) -> int:
        return math.floor(self._clock() / self.slot_seconds)

    def _advance(self) -> int:
        """Expire every slot that has left the window; the ring row of the current slot."""
        now = self._slot_now()
        head = now if self._head is None else self._head
        if now > head:
            if now - head >= self.slots:
                self._counts.fill(0)
                self._slot_events.fill(0)
                self._totals.fill(0)
                self._events = 0
            else:
                for slot in range(head + 1, now + 1):
                    self._expire(slot % self.slots)
            head = now
        # A clock that steps back is read as "still the newest slot", so nothing expires twice.
        self._head = head
        return head % self.slots

    def _expire(self, row: int) -> None:
        self._totals -= self._counts[row]
        self._counts[row].fill(0)
        self._events -= int(self._slot_events[row])
        self._slot_events[row] = 0

    def add(self, counts: IntArray, events: int) -> None:
        """Add one batch's bin counts and its number of events to the current slot."""
        if counts.shape != (self.width,):
            raise ValueError(f"counts: must have shape ({self.width},), got {counts.shape}")
        row = self._advance()
        self._counts[row] += counts
        self._totals += counts
        self._slot_events[row] += events
        self._events += events

    def totals(self) -> IntArray:
        """Counts per bin over the live slots (a copy)."""
        self._advance()
        return self._totals.copy()

    def events(self) -> int:
        """Number of events over the live slots."""
        self._advance()
        return self._events
