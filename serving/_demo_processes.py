"""Child processes of the demo and the end-to-end tests, each in its own process group.

They are found through the ports they log and always stopped, whole group, even after Ctrl-C.
Each child gets a new session (``start_new_session``), so Ctrl-C at the terminal reaches only
the demo, which then stops its children in order (model server first, so its prediction logger
flushes to a sidecar that is still up). ``stop`` sends SIGTERM to the group, waits, and sends
SIGKILL to whatever is left: the demo never leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

STOP_GRACE_SECONDS = 25.0
"""Longer than the model server's own shutdown grace (20 s), so a clean exit is not cut short."""


class ProcessFailedError(RuntimeError):
    """A child exited or did not become ready in time; the message points at its log."""


class ManagedProcess:
    """One child process in its own process group, logging to ``log_path``."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - argv is built by the caller, no shell
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id)."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def wait_for_log(self, keys: Sequence[str], timeout: float) -> dict[str, Any]:
        """The first JSON log line holding every one of ``keys`` (e.g. the bound ports)."""
        found: list[dict[str, Any]] = []

        def logged() -> bool:
            for line in self.log_path.read_bytes().splitlines():
                record = _json_object(line)
                if record is not None and all(key in record for key in keys):
                    found.append(record)
                    return True
            return False

        self._until(logged, f"logging {', '.join(keys)}", f"log {', '.join(keys)}", timeout)
        return found[0]

    def wait_ready(self, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200."""
        with httpx.Client(timeout=2.0) as client:

            def answers() -> bool:
                try:
                    return client.get(url).status_code == 200
                except httpx.HTTPError:
                    return False

            self._until(answers, f"being ready at {url}", f"get ready at {url}", timeout)

    def wait_for_socket(self, path: Path, timeout: float) -> None:
        """Poll until a Unix socket file exists at ``path`` (the child listens there)."""

        def listening() -> bool:
            try:
                return stat.S_ISSOCK(path.stat().st_mode)
            except OSError:
                return False

        self._until(listening, f"listening on {path}", f"listen on {path}", timeout)

    def _until(self, done: Callable[[], bool], before: str, did_not: str, timeout: float) -> None:
        """Poll ``done`` until true; ProcessFailedError if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            if not self.alive():
                raise ProcessFailedError(
                    f"{self.name} exited with {self.proc.returncode} before {before}; "
                    f"see {self.log_path}"
                )
            time.sleep(0.05)
        raise ProcessFailedError(f"{self.name} did not {did_not} in {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL the whole group now (a crash, as the fault-injection tests want it)."""
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.returncode = self.proc.wait()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM the group, wait up to ``grace`` s, then SIGKILL it; returns the exit code."""
        if self.alive():
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Children the process may have left in its group go too.
        _signal_group(self.proc.pid, signal.SIGKILL)
        self._log.close()
        self.returncode = self.proc.returncode
        return self.returncode


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args…`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def start_sidecar(
    profile: Path | Sequence[Path],
    log_path: Path,
    *,
    spool_dir: Path,
    predictions_dir: Path,
    window_seconds: float,
    slot_seconds: float = 1.0,
    ingest_port: int = 0,
    ingest_socket: Path | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[ManagedProcess, int, int]:
    """``python -m sidecar serve`` on loopback: the process, its ingest and metrics ports.

    ``spool_dir`` and ``predictions_dir`` (the NDJSON prediction logs) are required: the
    sidecar's defaults are folders of the working directory, locked by one sidecar at a time,
    so each caller names its own. ``profile`` is one profile file or several (one sidecar
    monitoring several model versions). A restarted sidecar given the same spool ships what its
    predecessor left there. ``ingest_port`` 0 picks a free port; a fixed one lets a restarted
    sidecar take the place of a stopped one, as the model server expects. With
    ``ingest_socket`` the same ingest API is also served on that Unix socket (its folder must
    exist; a model server reaches it as ``unix://<path>``), and this returns once it is there.
    """
    env = {
        **(environ if environ is not None else os.environ),
        "MODELWATCH_WINDOW_SECONDS": f"{window_seconds:g}",
        "MODELWATCH_SLOT_SECONDS": f"{slot_seconds:g}",
        "MODELWATCH_LOG_FORMAT": "json",
        "MODELWATCH_SPOOL_DIR": str(spool_dir),
        "MODELWATCH_LOG_DIR": str(predictions_dir),
    }
    if ingest_socket is not None:
        env["MODELWATCH_INGEST_SOCKET"] = str(ingest_socket)
    profiles = [profile] if isinstance(profile, Path) else list(profile)
    argv = python_module(
        "sidecar", "serve", *(arg for p in profiles for arg in ("--profile", str(p))),
        "--ingest-addr", f"127.0.0.1:{ingest_port}", "--metrics-addr", "127.0.0.1:0",
    )  # fmt: skip
    process = ManagedProcess("sidecar", argv, env, log_path)
    try:
        ports = process.wait_for_log(("ingest_port", "metrics_port"), timeout)
        ingest, metrics = int(ports["ingest_port"]), int(ports["metrics_port"])
        process.wait_ready(f"http://127.0.0.1:{ingest}/readyz", timeout)
        if ingest_socket is not None:
            process.wait_for_socket(ingest_socket, timeout)
    except BaseException:
        process.stop()
        raise
    return process, ingest, metrics


def start_model_server(
    model_dir: Path,
    log_path: Path,
    *,
    sidecar_url: str,
    settings: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[ManagedProcess, int]:
    """``python -m serving`` on a free loopback port, once ready: the process and its port."""
    env = {
        **(environ if environ is not None else os.environ),
        "MODELWATCH_MODEL_URI": str(model_dir),
        "MODELWATCH_SERVING_ADDR": "127.0.0.1:0",
        "MODELWATCH_SIDECAR_URL": sidecar_url,
        "MODELWATCH_LOG_FORMAT": "json",
        **(settings or {}),
    }
    process = ManagedProcess("model server", python_module("serving"), env, log_path)
    try:
        port = int(process.wait_for_log(("serving_port",), timeout)["serving_port"])
        process.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout)
    except BaseException:
        process.stop()
        raise
    return process, port


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for a process that must reuse it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pid, signum)


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
