"""Benchmark 3: events/s the prediction logger delivers to the sidecar, against one POST per event.

Both clients talk to the same real sidecar (``python -m sidecar serve`` on loopback with the
benchmark profile: 30 numeric features and a numeric prediction) in the same run, alternating.

- **Logger**: one thread calls ``PredictionLogger.log()`` for every event as fast as it can
  (a buffer large enough that nothing is dropped); the figure is events counted ``sent`` per
  wall-clock second from the first ``log()`` to the end of ``close()``, i.e. until the sidecar
  has answered for the last batch.
- **Baseline**: what a payload logger that ships one event per request does: each event is
  encoded and sent in its own ``POST /v1/events`` over one keep-alive connection, the answer
  read before the next. The figure is events the sidecar accepted per wall-clock second.

Goal: the logger delivers at least 20 times as many events per second. The cost of one
``log()`` call on the caller's thread (encoding, id, buffer append) is reported beside it.
Run alone with ``python -m bench.logger [--quick]``.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import _data
from bench._report import BenchResult, Goal, Measurement, print_result
from bench._server import running
from bench.http_ingest import sidecar_argv
from sidecar.client import PredictionLogger
from sidecar.profile import dump_profile

GOAL_RATIO = 20.0


@dataclass(frozen=True, slots=True)
class _Row:
    features: dict[str, float]
    prediction: float
    latency: float


@dataclass(frozen=True, slots=True)
class _Run:
    events: int
    seconds: float
    log_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _rows(n: int) -> list[_Row]:
    data = _data.window_columns(n)
    names = list(data.features)
    values = [data.features[name].tolist() for name in names]
    predictions = data.prediction.tolist()
    return [
        _Row(dict(zip(names, (col[i] for col in values), strict=True)), predictions[i], 0.004)
        for i in range(n)
    ]


def _logger_run(port: int, rows: list[_Row]) -> _Run:
    logger = PredictionLogger(
        model=_data.MODEL,
        version=_data.VERSION,
        url=f"http://127.0.0.1:{port}",
        max_buffer=len(rows),
        timeout=30.0,
    )
    logger.start()
    started = time.perf_counter()
    for row in rows:
        logger.log(features=row.features, prediction=row.prediction, latency_seconds=row.latency)
    logged = time.perf_counter()
    logger.close(timeout=300.0)
    seconds = time.perf_counter() - started
    stats = logger.stats()
    if stats.sent != len(rows):
        raise RuntimeError(f"logger: {stats} (expected every event sent)")
    return _Run(stats.sent, seconds, log_seconds=logged - started)


def _per_event_run(port: int, rows: list[_Row], tag: str) -> _Run:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30.0)
    headers = {"Content-Type": "application/json"}
    accepted = 0
    started = time.perf_counter()
    try:
        for i, row in enumerate(rows):
            event: dict[str, Any] = {
                "id": f"{tag}-{i}",
                "timestamp": time.time(),
                "latency_seconds": row.latency,
                "status": "ok",
                "features": row.features,
                "prediction": row.prediction,
            }
            body = orjson.dumps({"model": _data.MODEL, "version": _data.VERSION, "events": [event]})
            conn.request("POST", "/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            answer = orjson.loads(response.read())
            if response.status != 202:
                raise RuntimeError(f"per-event POST: {response.status} {answer}")
            accepted += int(answer["accepted"])
    finally:
        conn.close()
    return _Run(accepted, time.perf_counter() - started)


def _measurement(label: str, runs: list[_Run]) -> Measurement:
    rates = [r.rate for r in runs]
    return Measurement(
        label, max(rates), "events/s", median=statistics.median(rates), samples=len(rates)
    )


def run(*, quick: bool) -> BenchResult:
    """Deliver the same events with the logger and one POST per event; compare events/s."""
    started = time.perf_counter()
    logger_events = 20_000 if quick else 100_000
    per_event_events = 1_000 if quick else 5_000
    repeats = 2 if quick else 3
    rows = _rows(logger_events)
    logger_runs: list[_Run] = []
    per_event_runs: list[_Run] = []
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-logger-") as tmp:
        profile, _ = _data.build_profile(_data.reference_columns())
        profile_path = Path(tmp) / "profile.json"
        dump_profile(profile, profile_path)
        with running(sidecar_argv(profile_path)) as sidecar:
            _logger_run(sidecar.port, rows[:2_000])  # warm-up: connections, JIT-free paths
            _per_event_run(sidecar.port, rows[:200], "warmup")
            # Alternate the two clients so a burst of other load on the machine hits both.
            for k in range(repeats):
                logger_runs.append(_logger_run(sidecar.port, rows))
                per_event_runs.append(
                    _per_event_run(sidecar.port, rows[:per_event_events], f"run{k}")
                )
    figure = _measurement("prediction logger (batched)", logger_runs)
    baseline = _measurement("one POST per event (keep-alive)", per_event_runs)
    ratio = figure.best / baseline.best
    log_us = [r.log_seconds / r.events * 1e6 for r in logger_runs]
    return BenchResult(
        name="logger",
        figure=figure,
        baselines=[baseline],
        ratios={"logger/per-event POST": ratio},
        goals=[Goal(f">= {GOAL_RATIO:g}x one POST per event", ratio >= GOAL_RATIO)],
        details={
            "logger_events_per_run": logger_events,
            "per_event_events_per_run": per_event_events,
            "batch_size": 500,
            "log_call_microseconds": {
                "best": round(min(log_us), 2),
                "median": round(statistics.median(log_us), 2),
            },
            "logger_runs_seconds": [round(r.seconds, 3) for r in logger_runs],
            "per_event_runs_seconds": [round(r.seconds, 3) for r in per_event_runs],
        },
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone and print its result."""
    parser = argparse.ArgumentParser(prog="python -m bench.logger", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a smoke run")
    args = parser.parse_args(argv)
    print_result(run(quick=args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
