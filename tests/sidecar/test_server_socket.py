"""The ingest API on a Unix socket: the TCP app, mode 0o660, stale and foreign files, clean-up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sidecar.errors import ConfigError
from sidecar.logs import get_logger
from sidecar.profile import Profile, dump_profile
from sidecar.server import Sidecar
from sidecar.settings import Settings
from tests.support.exposition import sample_value
from tests.support.profiles import make_profile
from tests.support.sidecar_dirs import dirs_environ, dirs_overrides

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0
KEY = "MODELWATCH_INGEST_SOCKET"
TOKEN = "uds-token"  # noqa: S105 - a made-up token for the test sidecar
MV = {"model": "m", "version": "1"}


def _profile() -> Profile:
    rng = np.random.default_rng(5)
    return make_profile(numeric={"x": rng.normal(0, 1, 500)})


def _events(n: int, prefix: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        **MV,
        "events": [
            {
                "id": f"{prefix}{i}",
                "timestamp": now,
                "latency_seconds": 0.01,
                "features": {"x": float(i % 5)},
                "prediction": 0.5,
            }
            for i in range(n)
        ],
    }


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    """Where the sidecar's ingest socket goes: a fresh folder, short enough for sun_path."""
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "ingest.sock"
    assert len(os.fsencode(path)) <= 107, f"tmp_path too long for a Unix socket: {path}"
    return path


def _settings(root: Path, socket_path: Path | str, **overrides: object) -> Settings:
    return Settings.from_sources(
        {"MODELWATCH_INGEST_TOKEN": TOKEN},
        {
            "profiles": ["unused.json"],
            "ingest_addr": "127.0.0.1:0",
            "metrics_addr": "127.0.0.1:0",
            "ingest_socket": str(socket_path),
            **dirs_overrides(root),
            **overrides,
        },
    )


def _run(settings: Settings, body: Callable[[Sidecar], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Sidecar(settings, [_profile()], logger=get_logger()) as sidecar:
            await body(sidecar)

    asyncio.run(main())


def _start_fails(settings: Settings) -> ConfigError:
    sidecar = Sidecar(settings, [_profile()], logger=get_logger())
    with pytest.raises(ConfigError) as info:
        asyncio.run(sidecar.start())
    return info.value


def _uds_client(path: Path) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=10)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --------------------------------------------------------------------------- serving


def test_events_over_the_socket_are_counted_like_events_over_tcp(
    tmp_path: Path, sock_path: Path
) -> None:
    """Events POSTed over the Unix socket and over TCP land in the same counters and metrics."""

    async def body(sidecar: Sidecar) -> None:
        assert sidecar.ingest_socket == sock_path
        async with _uds_client(sock_path) as uds, httpx.AsyncClient(timeout=10) as tcp:
            answer = await uds.post("/v1/events", json=_events(12, "u"), headers=AUTH)
            assert (answer.status_code, answer.json()["accepted"]) == (202, 12), answer.text
            ingest = f"http://127.0.0.1:{sidecar.ingest_port}/v1/events"
            answer = await tcp.post(ingest, json=_events(5, "t"), headers=AUTH)
            assert answer.status_code == 202, answer.text
            metrics = f"http://127.0.0.1:{sidecar.metrics_port}/metrics"
            exposition = (await tcp.get(metrics)).text
        assert sample_value(exposition, "modelwatch_events_accepted_total") == 17
        assert sample_value(exposition, "modelwatch_predictions_total", **MV, status="ok") == 17

    _run(_settings(tmp_path, sock_path), body)


def test_the_token_is_required_on_the_socket_too(tmp_path: Path, sock_path: Path) -> None:
    """Without the bearer token the Unix socket answers 401, as TCP does; with it, 202."""

    async def body(sidecar: Sidecar) -> None:
        async with _uds_client(sock_path) as uds:
            refused = await uds.post("/v1/events", json=_events(1, "a"))
            wrong = await uds.post(
                "/v1/events", json=_events(1, "b"), headers={"Authorization": "Bearer nope"}
            )
            accepted = await uds.post("/v1/events", json=_events(1, "c"), headers=AUTH)
        assert (refused.status_code, wrong.status_code, accepted.status_code) == (401, 401, 202)
        assert sidecar.counters.requests_rejected["unauthorized"] == 2

    _run(_settings(tmp_path, sock_path), body)


def test_the_socket_file_has_mode_0660_and_is_removed_on_stop(
    tmp_path: Path, sock_path: Path
) -> None:
    """While serving, the path is a socket with mode 0o660; after stop the file is gone."""
    modes: list[int] = []

    async def body(_: Sidecar) -> None:
        info = sock_path.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        modes.append(stat.S_IMODE(info.st_mode))

    _run(_settings(tmp_path, sock_path), body)
    assert modes == [0o660]
    assert not sock_path.exists()


def test_a_stale_socket_file_is_replaced(tmp_path: Path, sock_path: Path) -> None:
    """A socket file left by a process that no longer listens is replaced and then served."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
        pytest.raises(ConnectionRefusedError),
    ):
        probe.connect(str(sock_path))  # nobody listens: what a dead sidecar leaves behind

    async def body(_: Sidecar) -> None:
        async with _uds_client(sock_path) as uds:
            assert (await uds.get("/healthz")).status_code == 200

    _run(_settings(tmp_path, sock_path), body)
    assert not sock_path.exists()


def test_a_file_replaced_while_serving_is_left_alone_on_stop(
    tmp_path: Path, sock_path: Path
) -> None:
    """Stop removes only its own socket file, not one another process bound at the same path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as successor:

        async def body(_: Sidecar) -> None:
            sock_path.unlink()
            successor.bind(str(sock_path))

        _run(_settings(tmp_path, sock_path), body)
        assert stat.S_ISSOCK(sock_path.lstat().st_mode)


# --------------------------------------------------------------------------- refusals


def test_a_live_listener_at_the_path_is_a_config_error(tmp_path: Path, sock_path: Path) -> None:
    """A socket another process listens on is refused, named by key, and left in place."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(sock_path))
        live.listen()
        error = _start_fails(_settings(tmp_path, sock_path))
        assert error.problems == {KEY: f"another process is listening on {sock_path}"}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(sock_path))  # still the other process's socket


def test_a_regular_file_at_the_path_is_a_config_error(tmp_path: Path, sock_path: Path) -> None:
    """A path holding a file that is not a socket is refused and the file is kept as it was."""
    sock_path.write_text("keep me")
    error = _start_fails(_settings(tmp_path, sock_path))
    assert error.problems == {KEY: f"{sock_path} exists and is not a socket"}
    assert sock_path.read_text() == "keep me"


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    """The socket's directory is not created: a missing one is a ConfigError naming it."""
    path = tmp_path / "absent" / "ingest.sock"
    error = _start_fails(_settings(tmp_path, path))
    assert error.problems == {KEY: f"directory {path.parent} does not exist"}


def test_a_later_bind_failure_removes_the_socket_file(tmp_path: Path, sock_path: Path) -> None:
    """When the metrics port is taken after the socket was bound, the socket file is removed."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = _settings(tmp_path, sock_path, metrics_addr=f"127.0.0.1:{port}")
        error = _start_fails(settings)
    assert set(error.problems) == {"MODELWATCH_METRICS_ADDR"}
    assert not sock_path.exists()


# --------------------------------------------------------------------------- the process


def _serve_process(tmp_path: Path, *argv: str, log: Path) -> subprocess.Popen[bytes]:
    profile = tmp_path / "m.json"
    dump_profile(_profile(), profile)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELWATCH_")}
    env.update(dirs_environ(tmp_path))
    argv = ("--profile", str(profile), "--ingest-addr", "127.0.0.1:0", *argv)
    argv = (*argv, "--metrics-addr", "127.0.0.1:0")
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _log_lines(log: Path) -> Iterator[dict[str, Any]]:
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def _wait_for_line(proc: subprocess.Popen[bytes], log: Path, message: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for line in _log_lines(log):
            if line["message"] == message:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    pytest.fail(f"no {message!r} log line; got:\n{log.read_text()}")


def test_a_bad_flag_value_exits_2_naming_the_flag(tmp_path: Path) -> None:
    """`serve --ingest-socket relative.sock` exits 2 with an error naming --ingest-socket."""
    log = tmp_path / "stderr.log"
    proc = _serve_process(tmp_path, "--ingest-socket", "relative.sock", log=log)
    assert proc.wait(timeout=DEADLINE_S) == 2
    errors = [line for line in _log_lines(log) if line["log.level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["problems"] == {
        "--ingest-socket": "must be an absolute path, got 'relative.sock'"
    }


def test_the_process_serves_the_socket_and_removes_it_on_sigterm(
    tmp_path: Path, sock_path: Path
) -> None:
    """The real process logs the socket, accepts events over it, and unlinks it on SIGTERM."""
    log = tmp_path / "stderr.log"
    proc = _serve_process(tmp_path, "--ingest-socket", str(sock_path), log=log)
    try:
        listening = _wait_for_line(proc, log, "listening")
        assert listening["ingest_socket"] == str(sock_path)
        transport = httpx.HTTPTransport(uds=str(sock_path))
        with httpx.Client(transport=transport, base_url="http://localhost", timeout=10) as uds:
            answer = uds.post("/v1/events", json=_events(3, "p"))
        assert (answer.status_code, answer.json()["accepted"]) == (202, 3), answer.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE_S)
    assert not sock_path.exists()
