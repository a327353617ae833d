"""Servers under load: start one in a subprocess, drive it with the load generator, stop it.

The server under test and the load generator are separate processes, so the figure is the
server's, measured with its own CPU time (psutil) while the generator's CPU use is reported
beside it to show it had headroom.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import psutil

from bench._report import Measurement

ROOT = Path(__file__).resolve().parent.parent
_START_TIMEOUT = 60.0


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings of the sidecar's ingest listener (``sidecar.server``), for the baseline.

    The sidecar runs uvicorn on uvloop with httptools when installed (both are, through
    ``uvicorn[standard]``); ``loop`` and ``http`` left at ``auto`` pick the same.
    """
    return {
        "log_config": None,
        "log_level": "info",
        "access_log": False,
        "server_header": False,
        "lifespan": "on",
        "ws": "none",
    }


@dataclass(slots=True)
class Running:
    """A started server: its process, its ingest port, and where its stderr goes."""

    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def ps(self) -> psutil.Process:
        """Psutil's view of the server process."""
        return psutil.Process(self.process.pid)


def _ingest_port(line: str) -> int | None:
    """The ingest port named by one JSON log line, or None when the line names none.

    The sidecar logs ``{"message": "listening", "ingest_port": P, …}`` (ECS field names); the
    decode-only baseline logs ``{"message": "listening", "ingest_port": P}`` the same way.
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(record, dict) and record.get("message") == "listening":
        port = record.get("ingest_port")
        if isinstance(port, int) and port > 0:
            return port
    return None


@contextmanager
def running(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[Running]:
    """Start ``python argv…`` from the repository root, wait for its ingest port, stop it after.

    A sidecar spools and writes its NDJSON logs in this run's temporary folder unless ``env``
    names other folders: never in the repository's ``var/``, where a developer's sidecar or a
    test run may hold the spool's lock.
    """
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-") as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        folders = {
            "MODELWATCH_SPOOL_DIR": str(Path(tmp) / "spool"),
            "MODELWATCH_LOG_DIR": str(Path(tmp) / "predictions"),
        }
        full_env = {**os.environ, **folders, **(env or {})}
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, *argv],
                cwd=ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            port = _wait_for_port(process, stderr_path)
            yield Running(process, port, stderr_path)
        finally:
            _stop(process)


def _wait_for_port(process: subprocess.Popen[bytes], stderr_path: Path) -> int:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        for line in stderr_path.read_text(errors="replace").splitlines():
            port = _ingest_port(line)
            if port is not None:
                return port
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with status {process.returncode} before listening:\n"
                + stderr_path.read_text(errors="replace")[-3000:]
            )
        time.sleep(0.05)
    raise RuntimeError(
        f"server did not log its ingest port within {_START_TIMEOUT:.0f} s:\n"
        + stderr_path.read_text(errors="replace")[-3000:]
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@dataclass(frozen=True, slots=True)
class LoadRun:
    """One load-generator run against a server, with the server's CPU time over it."""

    events_sent: int
    accepted: int
    rejected: int
    failures: int
    first_failure: str | None
    wall_seconds: float
    client_cpu_seconds: float
    server_cpu_seconds: float

    @property
    def events_per_second(self) -> float:
        """Accepted events per wall-clock second."""
        return self.accepted / self.wall_seconds

    @property
    def events_per_server_cpu_second(self) -> float:
        """Accepted events per second of server CPU time: the throughput of one server core."""
        return self.accepted / self.server_cpu_seconds

    @property
    def server_utilisation(self) -> float:
        """Server CPU seconds per wall second (1.0 = one core fully busy)."""
        return self.server_cpu_seconds / self.wall_seconds

    @property
    def client_utilisation(self) -> float:
        """Load-generator CPU seconds per wall second."""
        return self.client_cpu_seconds / self.wall_seconds


def checked(name: str, load: LoadRun) -> LoadRun:
    """``load`` itself; RuntimeError when any request failed or any event was not accepted."""
    if load.failures or load.accepted != load.events_sent:
        raise RuntimeError(
            f"{name}: {load.failures} failed requests, {load.accepted} of "
            f"{load.events_sent} events accepted; first failure: {load.first_failure}"
        )
    return load


def per_core(label: str, loads: Sequence[LoadRun]) -> Measurement:
    """Accepted events per second of server CPU time over ``loads``: the best and the median."""
    values = sorted(load.events_per_server_cpu_second for load in loads)
    return Measurement(
        label,
        best=values[-1],
        unit="events/s per core",
        median=statistics.median(values),
        samples=len(values),
    )


def _cpu_seconds(ps: psutil.Process) -> float:
    times = ps.cpu_times()
    return float(times.user + times.system)


def _loadgen_argv(
    port: int, bodies_file: Path, events: int, connections: int, progress: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench._loadgen",
        "--port",
        str(port),
        "--bodies",
        str(bodies_file),
        "--events",
        str(events),
        "--connections",
        str(connections),
        "--progress",
        str(progress),
    ]


def drive(
    server: Running,
    bodies_file: Path,
    events: int,
    *,
    connections: int = 2,
    progress: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> LoadRun:
    """Send ``events`` events to ``server`` from a load-generator process and measure both.

    With ``progress`` > 0, ``on_progress(events_answered)`` is called each time the generator
    reports another ``progress`` events answered.
    """
    ps = server.ps
    cpu_before = _cpu_seconds(ps)
    process = subprocess.Popen(
        _loadgen_argv(server.port, bodies_file, events, connections, progress),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    summary: dict[str, Any] | None = None
    stdout: IO[bytes] | None = process.stdout
    if stdout is None:  # pragma: no cover - PIPE always gives a stream
        raise RuntimeError("load generator has no stdout")
    for raw in stdout:
        record = orjson.loads(raw)
        if "summary" in record:
            summary = record["summary"]
        elif on_progress is not None:
            on_progress(int(record["events"]))
    stderr = process.stderr.read() if process.stderr else b""
    process.wait()
    server_cpu = _cpu_seconds(ps) - cpu_before
    if summary is None:
        raise RuntimeError(f"load generator gave no summary: {stderr.decode(errors='replace')}")
    return LoadRun(
        events_sent=int(summary["events_sent"]),
        accepted=int(summary["accepted"]),
        rejected=int(summary["rejected"]),
        failures=int(summary["failures"]),
        first_failure=summary["first_failure"],
        wall_seconds=float(summary["wall_seconds"]),
        client_cpu_seconds=float(summary["cpu_seconds"]),
        server_cpu_seconds=server_cpu,
    )


def write_bodies(bodies: Sequence[bytes], directory: Path) -> Path:
    """The bodies in the load generator's file format (one body per line)."""
    path = directory / "bodies.ndjson"
    with path.open("wb") as out:
        for body in bodies:
            if b"\n" in body:
                raise ValueError("a body must not contain a newline")
            out.write(body + b"\n")
    return path
