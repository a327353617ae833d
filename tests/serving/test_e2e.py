"""End to end: the real model server and the real sidecar as processes, driven over real HTTP.

Drift: shifted features cross PSI 0.2 while untouched ones stay below 0.1. Faults: with the
sidecar down from the start, SIGKILLed mid-run, or answering slowly, every prediction succeeds
and the model server's logger accounts for every one exactly (sent + dropped + rejected).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import train
from serving._demo_processes import ManagedProcess, free_port, start_model_server, start_sidecar
from serving.loadgen import (
    DEFAULT_DRIFT,
    LoadConfig,
    LoadResult,
    LoadStats,
    TrafficPlan,
    load_rows,
    parse_shifts,
    run_load,
)
from tests.support.fake_sidecar import wait_for
from tests.support.sidecar_dirs import log_dir, spool_dir

pytestmark = pytest.mark.slow

DRAIN_SECONDS = 40.0
"""Deadline for the logger to empty its buffer once a sidecar answers (its backoff caps at 10 s)."""


@dataclass(frozen=True, slots=True)
class LoggerCounts:
    """The model server's logger series and its scored-predictions counter, from one scrape."""

    sent: float
    dropped: float
    rejected: float
    held: float
    capacity: float
    predictions: float

    @property
    def accounted(self) -> float:
        return self.sent + self.dropped + self.rejected


def _counts(port: int) -> LoggerCounts:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelwatch_logger_events_total":
                values[sample.labels["outcome"]] = sample.value
            elif sample.name in (
                "modelwatch_logger_buffer_events",
                "modelwatch_logger_buffer_capacity_events",
            ):
                values[sample.name] = sample.value
            elif (
                sample.name == "modelwatch_serving_predictions_total"
                and sample.labels.get("status") == "ok"
            ):
                values["predictions"] = sample.value
    return LoggerCounts(
        values["sent"],
        values["dropped"],
        values["rejected"],
        values["modelwatch_logger_buffer_events"],
        values["modelwatch_logger_buffer_capacity_events"],
        values["predictions"],
    )


def _drained(port: int, predictions: int) -> Callable[[], bool]:
    def check() -> bool:
        counts = _counts(port)
        return counts.held == 0 and counts.accounted >= predictions

    return check


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train.build(tmp_path_factory.mktemp("model") / "1").directory


def _dirs(tmp_path: Path) -> dict[str, Path]:
    """The sidecar's spool and NDJSON folders under ``tmp_path``, never the repository's var/."""
    return {"spool_dir": spool_dir(tmp_path), "predictions_dir": log_dir(tmp_path)}


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


def _load(
    port: int, rows: list[dict[str, Any]], plan: TrafficPlan, *, concurrency: int, requests: int
) -> LoadResult:
    """``requests`` requests, sent as fast as ``concurrency`` connections allow."""
    config = LoadConfig(
        url=f"http://127.0.0.1:{port}",
        model=train.MODEL_NAME,
        rate=None,
        concurrency=concurrency,
        max_requests=requests,
    )
    return asyncio.run(run_load(config, rows, plan))


# --------------------------------------------------------------------------- drift


def test_drift_scenario_moves_only_the_shifted_features(
    model_dir: Path, tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    """Shifted features' PSI crosses 0.2 in the sidecar while every untouched one stays below 0.1.

    The rows replayed are the training split, the reference itself, so an untouched feature's
    window differs from its reference only by which rows the last partial pass drew: its PSI
    is far below 0.1 (the held-out split would add its own sampling noise, PSI up to ~0.15
    for 200 rows against 369).
    """
    sidecar, ingest, _ = start_sidecar(
        model_dir / train.PROFILE_FILE,
        tmp_path / "sidecar.log",
        window_seconds=600,
        **_dirs(tmp_path),
    )
    processes.append(sidecar)
    server, port = start_model_server(
        model_dir, tmp_path / "serving.log", sidecar_url=f"http://127.0.0.1:{ingest}"
    )
    processes.append(server)
    shifts = parse_shifts(DEFAULT_DRIFT)
    plan = TrafficPlan("drift", shifts=shifts, instances_per_request=8)
    result = _load(port, load_rows("train", model_dir), plan, concurrency=8, requests=250)
    assert result.ok == result.requests == 250
    events = result.instances

    def snapshot() -> dict[str, object]:
        answer = httpx.get(f"http://127.0.0.1:{ingest}/v1/drift", timeout=5).json()
        model: dict[str, object] = answer["models"][0]
        return model

    wait_for(lambda: snapshot()["window_events"] == events, timeout=DRAIN_SECONDS)
    psi = {f["feature"]: f["psi"] for f in snapshot()["features"]}  # type: ignore[attr-defined]
    shifted = {s.feature for s in shifts}
    assert {name: psi[name] for name in shifted if not psi[name] > 0.2} == {}
    untouched = {name: value for name, value in psi.items() if name not in shifted}
    assert len(untouched) == len(train.feature_names()) - len(shifted)
    assert {name: value for name, value in untouched.items() if not value < 0.1} == {}


# --------------------------------------------------------------------------- faults


def test_sidecar_down_from_the_start(
    model_dir: Path, tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    """With no sidecar, every prediction succeeds and each event is accounted exactly.

    The oldest events beyond the logger's buffer are dropped while no sidecar listens; once one
    comes up on the configured port the rest are sent: sent + dropped + rejected = predictions.
    """
    port_for_sidecar = free_port()
    server, port = start_model_server(
        model_dir, tmp_path / "serving.log", sidecar_url=f"http://127.0.0.1:{port_for_sidecar}"
    )
    processes.append(server)
    rows = load_rows("holdout", model_dir)
    plan = TrafficPlan("steady", instances_per_request=1000)
    result = _load(port, rows, plan, concurrency=2, requests=12)
    assert result.ok == result.requests == 12
    predictions = result.instances

    capacity = _counts(port).capacity
    assert predictions > capacity  # the buffer must overflow for this test to mean anything
    wait_for(lambda: _counts(port).dropped + _counts(port).held == predictions)
    down = _counts(port)
    assert (down.sent, down.rejected, down.dropped) == (0, 0, predictions - capacity)

    sidecar, _, _ = start_sidecar(
        model_dir / train.PROFILE_FILE,
        tmp_path / "sidecar.log",
        window_seconds=600,
        ingest_port=port_for_sidecar,
        **_dirs(tmp_path),
    )
    processes.append(sidecar)
    wait_for(_drained(port, predictions), timeout=DRAIN_SECONDS)
    final = _counts(port)
    assert final.accounted == final.predictions == predictions
    assert final.sent == capacity


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short private folder for a socket: a socket path holds at most 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="mw-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_sidecar_killed_mid_run(
    model_dir: Path,
    tmp_path: Path,
    socket_dir: Path,
    processes: list[ManagedProcess],
    transport: str,
) -> None:
    """A sidecar SIGKILLed under load and restarted: every prediction succeeds and is accounted.

    Over a Unix socket the killed sidecar leaves its socket file behind; the restarted one
    replaces it and the model server's logger reconnects to the new listener at the same path.
    """
    ingest_port = free_port()
    socket = socket_dir / "ingest.sock" if transport == "unix" else None
    profile = model_dir / train.PROFILE_FILE
    first, _, _ = start_sidecar(
        profile,
        tmp_path / "sidecar-1.log",
        window_seconds=600,
        ingest_port=ingest_port,
        ingest_socket=socket,
        **_dirs(tmp_path),  # the same spool: the restart ships what the first one left
    )
    processes.append(first)
    url = f"unix://{socket}" if socket is not None else f"http://127.0.0.1:{ingest_port}"
    server, port = start_model_server(model_dir, tmp_path / "serving.log", sidecar_url=url)
    processes.append(server)
    stats = LoadStats()
    results: list[LoadResult] = []
    config = LoadConfig(
        url=f"http://127.0.0.1:{port}",
        model=train.MODEL_NAME,
        rate=100.0,
        concurrency=4,
        max_requests=300,
    )
    plan = TrafficPlan("steady", instances_per_request=5)
    rows = load_rows("holdout", model_dir)
    load = threading.Thread(
        target=lambda: results.append(asyncio.run(run_load(config, rows, plan, stats=stats)))
    )
    load.start()
    try:
        wait_for(lambda: _counts(port).sent > 0)
        assert stats.sent < 300, "the load ended before the sidecar was killed"
        first.kill()
        assert first.returncode == -9
    finally:
        load.join(timeout=120)
    (result,) = results
    assert result.ok == result.requests == 300
    predictions = result.instances
    if socket is not None:
        assert socket.is_socket()  # left behind by the killed sidecar

    second, _, _ = start_sidecar(
        profile,
        tmp_path / "sidecar-2.log",
        window_seconds=600,
        ingest_port=ingest_port,
        ingest_socket=socket,
        **_dirs(tmp_path),  # the same spool: the restart ships what the first one left
    )
    processes.append(second)
    wait_for(_drained(port, predictions), timeout=DRAIN_SECONDS)
    final = _counts(port)
    assert final.accounted == final.predictions == predictions


class SlowProxy:
    """A TCP proxy that holds each answer from upstream for a while before passing it on.

    The first ``timeouts`` answers are held longer than the logger's 2 s request timeout, so
    it must time out and retry; the rest are held ``delay`` seconds.
    """

    def __init__(self, upstream: int, *, delay: float, timeouts: int, timeout_delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.timeouts = timeouts
        self.timeout_delay = timeout_delay
        self.answers = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._loop.call_soon(self._loop.stop)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._proxy(reader, writer)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            return
        forward = asyncio.ensure_future(self._pipe(reader, up_writer, slow=False))
        try:
            await self._pipe(up_reader, writer, slow=True)
        finally:
            forward.cancel()
            await asyncio.gather(forward, return_exceptions=True)
            up_writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                if slow:
                    self.answers += 1
                    held = self.timeout_delay if self.answers <= self.timeouts else self.delay
                    await asyncio.sleep(held)
                writer.write(chunk)
                await writer.drain()


def test_sidecar_answering_slowly(
    model_dir: Path, tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    """A sidecar answering slowly, at first past the logger's timeout, costs no prediction.

    Every prediction succeeds and every event is accounted: sent + dropped + rejected.
    """
    sidecar, ingest, _ = start_sidecar(
        model_dir / train.PROFILE_FILE,
        tmp_path / "sidecar.log",
        window_seconds=600,
        **_dirs(tmp_path),
    )
    processes.append(sidecar)
    with SlowProxy(ingest, delay=0.3, timeouts=2, timeout_delay=2.5) as proxy:
        server, port = start_model_server(
            model_dir, tmp_path / "serving.log", sidecar_url=f"http://127.0.0.1:{proxy.port}"
        )
        processes.append(server)
        rows = load_rows("holdout", model_dir)
        plan = TrafficPlan("steady", instances_per_request=10)
        result = _load(port, rows, plan, concurrency=8, requests=200)
        assert result.ok == result.requests == 200
        predictions = result.instances
        wait_for(_drained(port, predictions), timeout=DRAIN_SECONDS)
        final = _counts(port)
        assert final.accounted == final.predictions == predictions
        assert proxy.answers > proxy.timeouts  # the slow path was taken, timeouts included
