"""The sliding window of per-slot counts, checked against recounting the live events."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.window import MAX_SLOTS, SlidingWindow


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


WIDTH = 4

_step = st.tuples(
    st.floats(0.0, 400.0, allow_nan=False),
    st.lists(st.integers(0, 5), min_size=WIDTH, max_size=WIDTH),
    st.integers(0, 9),
)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(_step, max_size=60),
    window=st.floats(10.0, 900.0),
    slot=st.floats(1.0, 120.0),
    start=st.floats(0.0, 1e6),
)
def test_totals_equal_recount_of_live_events(
    steps: list[tuple[float, list[int], int]], window: float, slot: float, start: float
) -> None:
    """After any schedule, totals and events equal a recount of the events in live slots."""
    window = max(window, slot)
    clock = FakeClock(start)
    win = SlidingWindow(WIDTH, window, slot, clock)
    slots = math.ceil(window / slot)
    shapes = (win._counts.shape, win._slot_events.shape, win._totals.shape)
    history: list[tuple[int, np.ndarray, int]] = []
    for advance, counts, events in steps:
        clock.now += advance
        vector = np.asarray(counts, dtype=np.int64)
        win.add(vector, events)
        history.append((math.floor(clock.now / slot), vector, events))
        now_slot = math.floor(clock.now / slot)
        live = [(c, e) for s, c, e in history if s > now_slot - slots]
        expected = np.sum([c for c, _ in live], axis=0) if live else np.zeros(WIDTH)
        totals = win.totals()
        assert np.array_equal(totals, expected)
        assert win.events() == sum(e for _, e in live)
        assert np.all(totals >= 0)
        assert (win._counts.shape, win._slot_events.shape, win._totals.shape) == shapes


def test_slot_leaves_exactly_when_it_falls_out_of_the_window() -> None:
    """With 60 s slots and a 180 s window, a slot counts for its own minute and the next two."""
    clock = FakeClock(0.0)
    win = SlidingWindow(2, 180.0, 60.0, clock)
    win.add(np.array([1, 0]), 1)
    clock.now = 179.9
    assert win.events() == 1
    clock.now = 180.0
    assert win.events() == 0
    assert np.array_equal(win.totals(), [0, 0])


def test_jump_beyond_the_window_clears_everything() -> None:
    """A clock jump longer than the window empties it, and new counts start from zero."""
    clock = FakeClock(0.0)
    win = SlidingWindow(3, 600.0, 60.0, clock)
    for _ in range(5):
        win.add(np.array([1, 2, 3]), 2)
        clock.now += 30
    clock.now += 10_000
    assert win.events() == 0
    win.add(np.array([0, 1, 0]), 1)
    assert np.array_equal(win.totals(), [0, 1, 0])


def test_clock_stepping_back_counts_in_the_newest_slot() -> None:
    """An earlier clock reading neither loses counts nor expires a slot twice."""
    clock = FakeClock(960.0)  # the start of slot 16
    win = SlidingWindow(1, 120.0, 60.0, clock)
    win.add(np.array([1]), 1)
    clock.now = 10.0
    win.add(np.array([1]), 1)
    assert win.events() == 2
    clock.now = 960.0 + 119.0
    assert win.events() == 2
    clock.now = 960.0 + 120.0
    assert win.events() == 0
    assert np.array_equal(win.totals(), [0])


def test_totals_is_a_copy() -> None:
    """Changing the returned totals does not change the window."""
    win = SlidingWindow(2, 60.0, 60.0, FakeClock())
    win.add(np.array([1, 1]), 1)
    win.totals()[0] = 99
    assert np.array_equal(win.totals(), [1, 1])


def test_add_rejects_wrong_width() -> None:
    """A count vector of the wrong shape is refused with the expected shape in the message."""
    win = SlidingWindow(3, 60.0, 60.0, FakeClock())
    with pytest.raises(ValueError, match=r"counts: must have shape \(3,\)"):
        win.add(np.array([1, 2]), 1)


@pytest.mark.parametrize(
    ("window", "slot", "field"),
    [(60.0, 0.0, "slot_seconds"), (30.0, 60.0, "window_seconds"), (60.0, math.nan, "slot_seconds")],
)
def test_invalid_settings_name_the_field(window: float, slot: float, field: str) -> None:
    """A non-positive slot or a window shorter than one slot is refused, naming the setting."""
    with pytest.raises(ValueError, match=field):
        SlidingWindow(1, window, slot, FakeClock())


def test_slot_count_rounds_up() -> None:
    """A window that is not a whole number of slots keeps one more (partly covered) slot."""
    assert SlidingWindow(1, 150.0, 60.0, FakeClock()).slots == 3


def test_more_slots_than_the_cap_are_refused_before_allocating() -> None:
    """A window of more than MAX_SLOTS slots raises instead of allocating slots x width counts."""
    with pytest.raises(ValueError, match="100000000 slots"):
        SlidingWindow(10**6, window_seconds=100_000.0, slot_seconds=0.001)
    assert SlidingWindow(WIDTH, window_seconds=MAX_SLOTS, slot_seconds=1.0).slots == MAX_SLOTS
