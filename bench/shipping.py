"""Prediction-log shipping: the spool's cost on ingest, and how fast the shipper empties it.

Ingest cost: the real sidecar in three configurations, started together and driven in turn with
the same bodies as ``bench.http_ingest`` (500 events, 30 features): shipping off (the
baseline), the spool on with a sink that is unreachable (the shipper backs off and sleeps, so
what remains is the ingest path's spool append), and the spool on with the default NDJSON file
sink shipping concurrently (the whole cost, shipper thread included). The figure is accepted
events per second of server CPU time, like ``bench.http_ingest``; the goal is that the spool
costs under 20 % of it. After each run of the shipping sidecar the benchmark waits for its spool
to drain, so its shipper never runs during another configuration's measurement.

Shipping throughput: 100 000 unique events (200 requests) are spooled in-process, then one
``Shipper`` ships them to the Elasticsearch test server (``tests.support.es_server``, in its
own process, through the official client) and, for comparison, to a sink that only serialises
the bulk body. The figure is documents per wall-clock second from the first read to the last
commit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench import _data
from bench._report import BenchResult, Goal, Measurement
from bench._server import ROOT, LoadRun, Running, checked, drive, per_core, running
from bench.http_ingest import prepare, sidecar_argv
from sidecar._dead_letter import DeadLetterFile
from sidecar.documents import Document, DocumentBuilder
from sidecar.es_settings import EsSettings, build_client
from sidecar.logs import get_logger
from sidecar.shipper import Shipper, ShipperConfig
from sidecar.sinks import DELIVERED, ElasticsearchSink, ItemResult, Sink
from sidecar.spool import Spool
from sidecar.spool_records import encode_batch

GOAL_SPOOL_COST = 0.20
_ES_SERVER_MAIN = (
    "import sys; from tests.support.es_server import EsServer; "
    "s = EsServer().start(); print(s.url, flush=True); sys.stdin.read()"
)
"""Runs the test server until its stdin closes, so it has a core of its own."""
_DRAIN_TIMEOUT = 300.0


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metrics_port(server: Running) -> int:
    for line in server.stderr_path.read_text(errors="replace").splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("message") == "listening":
            return int(record["metrics_port"])
    raise RuntimeError("the sidecar logged no metrics port")


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} not in the exposition")


def _wait_drained(server: Running) -> None:
    port = _metrics_port(server)
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    while _metric(port, "modelwatch_spool_oldest_event_age_seconds") > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the shipping sidecar did not drain its spool in time")
        time.sleep(0.2)


def _ingest_cost(tmp: Path, quick: bool) -> tuple[dict[str, list[LoadRun]], dict[str, Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    _, profile_path, bodies_file, _ = prepare(tmp, 40 if quick else 200)
    events = 50_000 if quick else 300_000
    repeats = 2 if quick else 3
    argv = sidecar_argv(profile_path)
    spool_env = {"MODELWATCH_SPOOL_MAX_BYTES": str(8 << 30)}
    configs = {
        "shipping off": {"MODELWATCH_SHIPPING": "off"},
        "spool, sink unreachable": {
            **spool_env,
            "MODELWATCH_SPOOL_DIR": str(tmp / "spool-unreachable"),
            "MODELWATCH_ES_URL": f"http://127.0.0.1:{_closed_port()}",
        },
        "spool + file shipping": {
            **spool_env,
            "MODELWATCH_SPOOL_DIR": str(tmp / "spool-file"),
            "MODELWATCH_LOG_DIR": str(tmp / "predictions"),
        },
    }
    runs: dict[str, list[LoadRun]] = {name: [] for name in configs}
    with ExitStack() as stack:
        servers = {name: stack.enter_context(running(argv, env)) for name, env in configs.items()}
        for server in servers.values():
            drive(server, bodies_file, 10_000)
        _wait_drained(servers["spool + file shipping"])
        for _ in range(repeats):
            for name, server in servers.items():
                runs[name].append(checked(name, drive(server, bodies_file, events)))
                if name == "spool + file shipping":
                    _wait_drained(server)
    return runs, {"events_per_run": events, "repeats": repeats}


# --------------------------------------------------------------------------- shipping


@contextmanager
def _es_server() -> Iterator[str]:
    """The Elasticsearch test server in its own process; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-c", _ES_SERVER_MAIN],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None  # noqa: S101 - PIPE gives a stream
        url = process.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the Elasticsearch test server did not start ({url!r})")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


class _SerialisingSink:
    """Builds the bulk body as the Elasticsearch sink does, and sends it nowhere."""

    def __init__(self) -> None:
        self.bytes = 0

    def send(self, documents: Sequence[Document]) -> list[ItemResult]:
        self.bytes += len(b"".join(doc.bulk_lines() for doc in documents))
        return [DELIVERED] * len(documents)

    def close(self) -> None:
        pass


def _spooled(directory: Path, bodies: list[bytes]) -> Spool:
    spool = Spool(directory, max_bytes=8 << 30)
    now = time.time()
    for body in bodies:
        if not spool.append(encode_batch(_data.MODEL, _data.VERSION, now, body, ())):
            raise RuntimeError("the benchmark spool refused a record")
    return spool


def _ship_all(directory: Path, bodies: list[bytes], sink: Sink) -> float:
    """Seconds one shipper takes to ship every body spooled in ``directory``."""
    spool = _spooled(directory, bodies)
    shipper = Shipper(
        spool,
        sink,
        DocumentBuilder(namespace="bench"),
        dead_letter=DeadLetterFile(directory / "dead-letter"),
        logger=get_logger(),
        config=ShipperConfig(),
    )
    try:
        started = time.perf_counter()
        while shipper.ship_once():
            pass
        elapsed = time.perf_counter() - started
        if spool.stats().oldest_written_at is not None:
            raise RuntimeError("the shipper stopped before the spool was empty")
        if shipper.stats.outcomes()["shipped"] != len(bodies) * _data.BATCH_EVENTS:
            raise RuntimeError(f"shipped {shipper.stats.outcomes()} of {len(bodies)} bodies")
        return elapsed
    finally:
        spool.close()


def _shipping(tmp: Path, quick: bool) -> tuple[Measurement, Measurement]:
    window = _data.window_columns((40 if quick else 200) * _data.BATCH_EVENTS, seed=11)
    bodies = _data.event_bodies(window)
    documents = len(bodies) * _data.BATCH_EVENTS
    null_seconds = _ship_all(tmp / "ship-null", bodies, _SerialisingSink())
    with _es_server() as url:
        client = build_client(EsSettings(urls=(url,)))
        try:
            es_seconds = _ship_all(tmp / "ship-es", bodies, ElasticsearchSink(client))
        finally:
            client.close()
    return (
        Measurement("shipper → Elasticsearch test server", documents / es_seconds, "documents/s"),
        Measurement("shipper → serialising null sink", documents / null_seconds, "documents/s"),
    )


def run(*, quick: bool) -> BenchResult:
    """Measure the spool's cost on ingest and the shipper's throughput."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-shipping-") as tmp_name:
        tmp = Path(tmp_name)
        runs, details = _ingest_cost(tmp / "ingest", quick)
        es_rate, null_rate = _shipping(tmp / "ship", quick)
    off = per_core("ingest, shipping off", runs["shipping off"])
    spool = per_core("ingest, spool (sink unreachable)", runs["spool, sink unreachable"])
    full = per_core("ingest, spool + file shipping", runs["spool + file shipping"])
    spool_cost = 1 - spool.best / off.best
    wall = {
        name: round(max(load.events_per_second for load in loads)) for name, loads in runs.items()
    }
    return BenchResult(
        name="shipping",
        figure=es_rate,
        baselines=[null_rate, off, spool, full],
        ratios={
            "spool cost on ingest (per core)": spool_cost,
            "spool + file shipping cost on ingest (per core)": 1 - full.best / off.best,
        },
        goals=[
            Goal(f"spool costs < {GOAL_SPOOL_COST:.0%} of ingest", spool_cost < GOAL_SPOOL_COST)
        ],
        details={**details, "best_events_per_wall_second": wall},
        seconds=time.perf_counter() - started,
    )
