"""Resident memory of the sidecar under sustained traffic: flat once the window is full.

The real sidecar runs in a subprocess with a short window (30 s of 1 s slots; 3 s in quick
mode) so that the window fills and then rolls while the load generator sends 10 million events
(1 million in quick mode) over HTTP, 200 000 distinct ids round-robin so the feedback cache fills
to its capacity too. Its RSS (psutil) is sampled before traffic and every tenth of the way.
Reported: the series, the growth from the first sample taken after the window was full to the
last, and the final RSS. Goal: flat after the window fills (growth under 5 % of the RSS at that
point) and under 200 MiB (the unit a Kubernetes memory limit of ``200Mi`` uses).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench._report import BenchResult, Goal, Measurement
from bench._server import drive, running
from bench.http_ingest import prepare, sidecar_argv

GOAL_MIB = 200.0
FLAT_SHARE = 0.05
MIB = 1024 * 1024


def _flat_description(*, filled: bool, quick: bool) -> str:
    text = f"flat after the window fills (growth <= {FLAT_SHARE:.0%})"
    if not filled:
        return text + " [the window never filled: no sample to judge]"
    if quick:
        # Allocator arenas and the feedback cache's table are still settling at 1M events.
        return text + " [quick run: short of steady state, indicative only]"
    return text


def run(*, quick: bool) -> BenchResult:
    """Feed the sidecar its events while sampling RSS; report the series and its growth."""
    started = time.perf_counter()
    events = 1_000_000 if quick else 10_000_000
    # Short enough that the window fills early in the run on a slow machine (about 120 000
    # events/s here), so most samples come after it is full and rolling.
    window_seconds = 3 if quick else 30
    env = {
        "MODELWATCH_WINDOW_SECONDS": str(window_seconds),
        "MODELWATCH_SLOT_SECONDS": "1",
    }
    series: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-memory-") as tmp:
        _, profile_path, bodies_file, _ = prepare(Path(tmp), 400)
        with running(sidecar_argv(profile_path), env) as server:
            ps = server.ps
            traffic_start = time.monotonic()
            series.append({"events": 0, "seconds": 0.0, "rss_mib": ps.memory_info().rss / MIB})

            def sample(answered: int) -> None:
                series.append(
                    {
                        "events": answered,
                        "seconds": round(time.monotonic() - traffic_start, 2),
                        "rss_mib": round(ps.memory_info().rss / MIB, 2),
                    }
                )

            load = drive(server, bodies_file, events, progress=events // 10, on_progress=sample)
    if load.failures:
        raise RuntimeError(f"sidecar refused {load.failures} requests: {load.first_failure}")

    full = [s for s in series if s["seconds"] >= window_seconds]
    final = series[-1]["rss_mib"]
    at_full = full[0]["rss_mib"] if full else None
    growth = final - at_full if at_full is not None else None
    flat = growth is not None and at_full is not None and growth <= FLAT_SHARE * at_full
    figure = Measurement("final RSS", final, "MiB")
    return BenchResult(
        name="memory",
        figure=figure,
        baselines=[Measurement("RSS before traffic", series[0]["rss_mib"], "MiB")],
        ratios={} if growth is None else {"growth after window full (MiB)": growth},
        goals=[
            Goal(_flat_description(filled=bool(full), quick=quick), flat),
            Goal(f"< {GOAL_MIB:g} MiB", final < GOAL_MIB),
        ],
        details={
            "events": load.accepted,
            "window_seconds": window_seconds,
            "slot_seconds": 1,
            "events_per_wall_second": round(load.events_per_second),
            "peak_rss_mib": max(s["rss_mib"] for s in series),
            "series": series,
        },
        seconds=time.perf_counter() - started,
    )
