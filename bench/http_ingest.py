"""End-to-end ingest throughput: the real sidecar in a subprocess, driven over loopback HTTP.

Row JSON bodies of 500 events (30 features and a prediction each, unique ids within a body) are
serialised once, then POSTed over keep-alive connections by the load generator in another
process (``bench._loadgen``). The figure is accepted events per second of server CPU time, i.e.
the throughput of one server core; the server's CPU use over the run (psutil) shows it was the
bottleneck and the generator's shows it had headroom. The baseline is the same server stack
(uvicorn + Starlette, same settings) with a handler that only reads and decodes the body
(``bench._decode_server``). Goal: at least 50 000 events/s per core and at least half of the
decode-only figure.

The sidecar runs with ``MODELWATCH_SHIPPING=off``: this benchmark measures the ingest path
(decode, validate, bin, answer). What the prediction log adds on top, the spool append on the
request path and the shipper's background work, is measured by ``bench.shipping``.

In-process figures for the parser alone (``orjson.loads``, ``parse_events``, and parse plus
``observe``) are reported beside it, to show where a request's time goes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import _data
from bench._report import BenchResult, Goal, Measurement, rate, timings
from bench._server import LoadRun, checked, drive, per_core, running, write_bodies
from bench.engine import FakeClock
from sidecar.engine import EngineConfig, ModelMonitor
from sidecar.events import IngestLimits, parse_events
from sidecar.profile import Profile, dump_profile

GOAL_EVENTS_PER_SECOND = 50_000
GOAL_DECODE_SHARE = 0.5
BODIES = 200
"""Distinct bodies (100 000 distinct ids), sent round-robin."""
SATURATED = 0.9
"""Server CPU share of one core above which the server, not the generator, set the pace."""


def sidecar_argv(profile_path: Path) -> list[str]:
    """The command line of the real sidecar on free loopback ports."""
    return [
        "-m",
        "sidecar",
        "serve",
        "--profile",
        str(profile_path),
        "--ingest-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ]


def prepare(directory: Path, bodies: int) -> tuple[Profile, Path, Path, list[bytes]]:
    """The profile file and the bodies file in ``directory``, plus the bodies themselves."""
    reference = _data.reference_columns()
    profile, _ = _data.build_profile(reference)
    profile_path = directory / "profile.json"
    dump_profile(profile, profile_path)
    window = _data.window_columns(bodies * _data.BATCH_EVENTS)
    serialised = _data.event_bodies(window)
    return profile, profile_path, write_bodies(serialised, directory), serialised


def _in_process(profile: Profile, bodies: list[bytes], repeats: int) -> list[Measurement]:
    """Events/s of the request's CPU work without the server: decode, parse, parse + observe."""
    sample = bodies[:20]
    events = len(sample) * _data.BATCH_EVENTS
    limits = IngestLimits()

    def lookup(model: str, version: str) -> Profile | None:
        return profile if (model, version) == (profile.model, profile.version) else None

    def decode() -> None:
        for body in sample:
            orjson.loads(body)

    def parse() -> None:
        for body in sample:
            parse_events(body, lookup, limits)

    clock = FakeClock()
    monitor = ModelMonitor(profile, EngineConfig(), clock)

    def parse_observe() -> None:
        for body in sample:
            monitor.observe(parse_events(body, lookup, limits).columns)
            clock.now += 0.001

    parse_observe()
    return [
        rate("in-process orjson.loads", events, timings(decode, repeats), "events/s"),
        rate("in-process parse_events", events, timings(parse, repeats), "events/s"),
        rate(
            "in-process parse_events + observe", events, timings(parse_observe, repeats), "events/s"
        ),
    ]


def _describe(load: LoadRun) -> dict[str, Any]:
    return {
        "events": load.accepted,
        "wall_seconds": round(load.wall_seconds, 3),
        "events_per_wall_second": round(load.events_per_second),
        "events_per_server_cpu_second": round(load.events_per_server_cpu_second),
        "server_cpu_utilisation": round(load.server_utilisation, 3),
        "client_cpu_utilisation": round(load.client_utilisation, 3),
        "server_saturated": load.server_utilisation >= SATURATED,
    }


def run(*, quick: bool) -> BenchResult:
    """Drive the decode-only server and the sidecar with the same bodies; compare per core."""
    started = time.perf_counter()
    events = 100_000 if quick else 1_000_000
    warmup = 10_000 if quick else 50_000
    repeats = 2 if quick else 3
    decode_runs: list[LoadRun] = []
    sidecar_runs: list[LoadRun] = []
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-http-") as tmp:
        profile, profile_path, bodies_file, bodies = prepare(Path(tmp), 40 if quick else BODIES)
        in_process = _in_process(profile, bodies, 3 if quick else 5)
        with (
            running(["-m", "bench._decode_server"]) as decode,
            running(sidecar_argv(profile_path), {"MODELWATCH_SHIPPING": "off"}) as sidecar,
        ):
            drive(decode, bodies_file, warmup)
            drive(sidecar, bodies_file, warmup)
            # Alternate the two servers so a burst of other load on the machine hits both.
            for _ in range(repeats):
                decode_runs.append(checked("decode-only", drive(decode, bodies_file, events)))
                sidecar_runs.append(checked("sidecar", drive(sidecar, bodies_file, events)))

    figure = per_core("sidecar", sidecar_runs)
    baseline = per_core("decode-only server", decode_runs)
    share = figure.best / baseline.best
    return BenchResult(
        name="http",
        figure=figure,
        baselines=[baseline, *in_process],
        ratios={"sidecar/decode-only": share},
        goals=[
            Goal(
                f">= {GOAL_EVENTS_PER_SECOND:,} events/s per core",
                figure.best >= GOAL_EVENTS_PER_SECOND,
            ),
            Goal(f">= {GOAL_DECODE_SHARE:g} of decode-only", share >= GOAL_DECODE_SHARE),
        ],
        details={
            "sidecar_runs": [_describe(load) for load in sidecar_runs],
            "decode_only_runs": [_describe(load) for load in decode_runs],
            "body_bytes": len(bodies[0]),
            "events_per_body": _data.BATCH_EVENTS,
            "connections": 2,
        },
        seconds=time.perf_counter() - started,
    )
