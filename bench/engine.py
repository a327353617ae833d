"""Engine throughput: events per second of ``ModelMonitor.observe`` on ready-made batches.

The figure is in-process and single-threaded: the same pre-built ``EventColumns`` batches of 500
events are fed to a fresh monitor, repeatedly, best of N. The floor is the same binning done bare
on the same batches: per numeric column, one ``searchsorted`` on the profile's fine (KS) edges
and one ``bincount`` added into a preallocated count array. The ratio engine time / floor time
is the engine's overhead over that floor. Goal: at least 300 000 events/s and
within 3x of the floor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bench import _data
from bench._data import FloatArray
from bench._report import BenchResult, Goal, rate, timings
from sidecar.columns import EventColumns
from sidecar.engine import EngineConfig, ModelMonitor
from sidecar.profile import NumericProfile, Profile

GOAL_EVENTS_PER_SECOND = 300_000
GOAL_FLOOR_RATIO = 3.0


class FakeClock:
    """A clock the benchmark moves by hand, so slots roll exactly when it says."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _numeric_edges(profile: Profile) -> list[tuple[str, FloatArray]]:
    columns = [f for f in profile.features if isinstance(f, NumericProfile)]
    if isinstance(profile.prediction, NumericProfile):
        columns.append(profile.prediction)
    return [(f.name, f.ks_edges) for f in columns]


def floor_pass(profile: Profile, batches: Sequence[EventColumns]) -> NDArray[np.int64]:
    """The bare numpy work on every batch: fine-bin each numeric column and count into place."""
    edges = _numeric_edges(profile)
    width = max(len(e) for _, e in edges) + 1
    counts = np.zeros((len(edges), width), dtype=np.int64)
    for batch in batches:
        for row, (name, feature_edges) in enumerate(edges):
            values = batch.numeric.get(name, batch.prediction)
            if not isinstance(values, np.ndarray):
                raise TypeError(f"column {name!r} is not numeric")
            idx = np.searchsorted(feature_edges, values, side="left")
            counts[row, : len(feature_edges) + 1] += np.bincount(
                idx, minlength=len(feature_edges) + 1
            )
    return counts


def feed(
    monitor: ModelMonitor, clock: FakeClock, batches: Sequence[EventColumns], step: float
) -> None:
    """Observe every batch, the clock moving ``step`` seconds between batches."""
    for batch in batches:
        monitor.observe(batch)
        clock.now += step


def _fresh(profile: Profile) -> tuple[ModelMonitor, FakeClock]:
    clock = FakeClock()
    return ModelMonitor(profile, EngineConfig(), clock), clock


def run(*, quick: bool) -> BenchResult:
    """Time the engine and the floor on the same batches; report events/s and their ratio."""
    started = time.perf_counter()
    distinct = 20
    rounds = 2 if quick else 10
    repeats = 3 if quick else 7
    reference = _data.reference_columns()
    profile, builder = _data.build_profile(reference)
    window = _data.window_columns(distinct * _data.BATCH_EVENTS)
    batches = _data.event_batches(window) * rounds
    events = sum(b.n for b in batches)
    # 1 ms of clock per batch: one slot boundary every 60 000 batches at the default 60 s slots,
    # as in production where slots roll once a minute, not once a batch.
    step = 0.001

    feed(*_fresh(profile), batches[:distinct], step)  # warm caches and lazy set-up
    floor_pass(profile, batches[:distinct])
    # Each repeat feeds a fresh, empty monitor, built before the clock starts.
    monitors = iter([_fresh(profile) for _ in range(repeats)])
    engine_times = timings(lambda: feed(*next(monitors), batches, step), repeats)
    floor_times = timings(lambda: floor_pass(profile, batches), repeats)

    figure = rate("ModelMonitor.observe", events, engine_times, "events/s")
    floor = rate("numpy floor (searchsorted + bincount)", events, floor_times, "events/s")
    ratio = floor.best / figure.best
    return BenchResult(
        name="engine",
        figure=figure,
        baselines=[floor],
        ratios={"slowdown vs floor (time ratio)": ratio},
        goals=[
            Goal(f">= {GOAL_EVENTS_PER_SECOND:,} events/s", figure.best >= GOAL_EVENTS_PER_SECOND),
            Goal(f"within {GOAL_FLOOR_RATIO:g}x of the floor", ratio <= GOAL_FLOOR_RATIO),
        ],
        details={
            "events_per_repeat": events,
            "batch_events": _data.BATCH_EVENTS,
            "numeric_columns": len(_numeric_edges(profile)),
            "fine_bins": int(np.mean([len(e) + 1 for _, e in _numeric_edges(profile)])),
            "profile_builder": builder,
        },
        seconds=time.perf_counter() - started,
    )
