"""Load generator: replays data rows against a KServe V1 model server at a target rate.

``python -m serving.loadgen --url http://127.0.0.1:8080 --model breast-cancer --data holdout
--rate 50 --concurrency 8 --duration 30 --scenario steady|drift|slow|errors`` sends
``POST /v1/models/{model}:predict`` requests and prints the achieved rate, client-side latency
quantiles and the answers by status. ``run_load`` is the same as a coroutine returning a
``LoadResult``, for the demo and the tests.

Pacing is open-loop up to the concurrency: request ``i`` is due at ``i / rate`` seconds and is
sent by the first of ``concurrency`` workers that is free, so a server slower than
``rate`` requests per second shows as an achieved rate below target, not as a longer run.
What each scenario sends is described in ``serving._loadgen_traffic``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from serving._loadgen_traffic import (
    DEFAULT_DRIFT,
    SCENARIOS,
    RequestKind,
    Scenario,
    Shift,
    Traffic,
    TrafficError,
    TrafficPlan,
    parse_shifts,
)

__all__ = [
    "DEFAULT_DRIFT",
    "SCENARIOS",
    "LoadConfig",
    "LoadResult",
    "LoadStats",
    "Scenario",
    "Shift",
    "TrafficError",
    "TrafficPlan",
    "load_rows",
    "main",
    "parse_shifts",
    "run_load",
]

DEFAULT_MODEL_DIR = Path("var/models/breast-cancer/1")
QUANTILES = (0.5, 0.95, 0.99)
_SPLITS = {"holdout": "holdout.parquet", "train": "train.parquet"}
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """Where to send, how fast and for how long."""

    url: str
    model: str
    rate: float | None = 50.0
    """Target requests per second; None sends as fast as ``concurrency`` allows."""
    concurrency: int = 8
    duration: float = 30.0
    max_requests: int | None = None
    """Stop after this many requests even if ``duration`` has not passed."""
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.rate is not None and not self.rate > 0:
            raise TrafficError(f"--rate: must be > 0, got {self.rate}")
        if self.concurrency < 1:
            raise TrafficError(f"--concurrency: must be at least 1, got {self.concurrency}")
        if not self.duration > 0:
            raise TrafficError(f"--duration: must be > 0, got {self.duration}")
        if self.max_requests is not None and self.max_requests < 1:
            raise TrafficError(f"--requests: must be at least 1, got {self.max_requests}")


@dataclass(slots=True)
class LoadStats:
    """Counters a run updates as answers arrive (read them live; ``result()`` freezes them)."""

    sent: int = 0
    instances: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def record(self, kind: RequestKind, instances: int, status: int | None, seconds: float) -> None:
        """One request finished with HTTP ``status`` (None: no answer) after ``seconds``."""
        self.sent += 1
        self.instances += instances
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if status is None:
            self.transport_errors += 1
            return
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.latencies.append(seconds)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one run sent and how the server answered, measured at the client."""

    scenario: Scenario
    seconds: float
    requests: int
    instances: int
    by_status: Mapping[int, int]
    by_kind: Mapping[str, int]
    transport_errors: int
    latency_quantiles: Mapping[float, float]
    """Client-side seconds at ``QUANTILES`` over every answered request (empty when none)."""

    @property
    def ok(self) -> int:
        """Requests answered 2xx."""
        return sum(n for code, n in self.by_status.items() if 200 <= code < 300)

    @property
    def client_errors(self) -> int:
        """Requests answered 4xx."""
        return sum(n for code, n in self.by_status.items() if 400 <= code < 500)

    @property
    def server_errors(self) -> int:
        """Requests answered 5xx."""
        return sum(n for code, n in self.by_status.items() if code >= 500)

    @property
    def rate(self) -> float:
        """Achieved requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few human lines: rate, latency quantiles, answers."""
        quantiles = ", ".join(
            f"p{round(q * 100)} {seconds * 1e3:.1f} ms"
            for q, seconds in self.latency_quantiles.items()
        )
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.by_status.items()))
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.by_kind.items()))
        return (
            f"{self.scenario}: {self.requests} requests ({self.instances} instances) in "
            f"{self.seconds:.1f} s = {self.rate:.1f} req/s\n"
            f"  latency (client side): {quantiles or 'no answers'}\n"
            f"  answers: {statuses or 'none'}; no answer: {self.transport_errors}; "
            f"4xx {self.client_errors}, 5xx {self.server_errors}\n"
            f"  requests by kind: {kinds}"
        )


def load_rows(data: str | Path, model_dir: Path = DEFAULT_MODEL_DIR) -> list[dict[str, Any]]:
    """Rows of ``data``: ``holdout``/``train`` (in ``model_dir``) or a .parquet/.csv path.

    A ``label`` column, when present, is the ground truth and is left out of the rows.
    """
    path = model_dir / _SPLITS[str(data)] if str(data) in _SPLITS else Path(data)
    if not path.is_file():
        raise TrafficError(f"--data: no file at {path} (build the model: python -m serving.train)")
    if path.suffix == ".csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    names = [n for n in table.column_names if n != "label"]
    columns = [table.column(n).to_pylist() for n in names]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


async def run_load(
    config: LoadConfig,
    rows: Sequence[Mapping[str, Any]],
    plan: TrafficPlan,
    *,
    stats: LoadStats | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LoadResult:
    """Send traffic per ``plan`` until ``config.duration`` or ``config.max_requests``."""
    traffic = Traffic(rows, plan)
    stats = stats if stats is not None else LoadStats()
    path = f"/v1/models/{config.model}:predict"
    limits = httpx.Limits(max_connections=config.concurrency)
    counter = itertools.count()
    start = clock()

    async with httpx.AsyncClient(
        base_url=config.url, timeout=config.timeout, limits=limits, transport=transport
    ) as client:

        async def worker() -> None:
            while True:
                index = next(counter)
                if config.max_requests is not None and index >= config.max_requests:
                    return
                due = index / config.rate if config.rate else clock() - start
                if due >= config.duration:
                    return
                wait = start + due - clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                planned = traffic.request(index, due)
                body = orjson.dumps({"instances": planned.instances})
                sent_at = clock()
                try:
                    answer = await client.post(path, content=body, headers=_JSON)
                except httpx.HTTPError:
                    status: int | None = None
                else:
                    status = answer.status_code
                stats.record(planned.kind, len(planned.instances), status, clock() - sent_at)

        await asyncio.gather(*(worker() for _ in range(config.concurrency)))
    seconds = clock() - start
    return LoadResult(
        scenario=plan.scenario,
        seconds=seconds,
        requests=stats.sent,
        instances=stats.instances,
        by_status=dict(stats.by_status),
        by_kind=dict(stats.by_kind),
        transport_errors=stats.transport_errors,
        latency_quantiles=_quantiles(stats.latencies),
    )


def _quantiles(latencies: Sequence[float]) -> dict[float, float]:
    if not latencies:
        return {}
    values = np.quantile(np.asarray(latencies), QUANTILES)
    return {q: float(v) for q, v in zip(QUANTILES, values, strict=True)}


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.loadgen",
        description="Replay data rows against a KServe V1 model server.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="model server base URL")
    parser.add_argument("--model", default="breast-cancer", help="model name in the path")
    parser.add_argument(
        "--data", default="holdout", help="holdout, train, or a .parquet/.csv file of rows"
    )
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s; 0 = unpaced")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--requests", type=int, default=None, help="stop after N requests")
    parser.add_argument("--scenario", choices=SCENARIOS, default="steady")
    parser.add_argument(
        "--drift-features",
        action="append",
        default=[],
        metavar="SHIFT",
        help="FEATURE*K, FEATURE+D or FEATURE=VALUE[@P], comma-separated or repeated "
        f"(default {','.join(DEFAULT_DRIFT)})",
    )
    parser.add_argument("--drift-after", type=float, default=0.0, help="seconds before drift")
    parser.add_argument("--instances", type=int, default=1, help="instances per request")
    parser.add_argument("--slow-share", type=float, default=0.2, help="share of heavy requests")
    parser.add_argument("--slow-instances", type=int, default=256, help="rows in a heavy request")
    parser.add_argument("--error-share", type=float, default=0.2, help="share of bad requests")
    parser.add_argument("--seed", type=int, default=2026)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load from the command line and print its summary; 2 on bad options."""
    args = _parser().parse_args(argv)
    try:
        config = LoadConfig(
            url=args.url,
            model=args.model,
            rate=args.rate or None,
            concurrency=args.concurrency,
            duration=args.duration,
            max_requests=args.requests,
        )
        plan = TrafficPlan(
            scenario=args.scenario,
            shifts=parse_shifts(args.drift_features or DEFAULT_DRIFT),
            drift_after=args.drift_after,
            instances_per_request=args.instances,
            slow_share=args.slow_share,
            slow_instances=args.slow_instances,
            error_share=args.error_share,
            seed=args.seed,
        )
        rows = load_rows(args.data, args.model_dir)
        result = asyncio.run(run_load(config, rows, plan))
    except TrafficError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
