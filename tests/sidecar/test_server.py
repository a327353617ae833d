"""The serve process: both listeners, the metrics app, start-up failures and graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import structlog

from sidecar.errors import ConfigError
from sidecar.logs import get_logger
from sidecar.profile import Profile, dump_profile, profile_to_json
from sidecar.server import Sidecar, add_serve_arguments, run_serve
from sidecar.settings import Settings
from tests.support.exposition import sample_value
from tests.support.profiles import make_profile
from tests.support.sidecar_dirs import KEYS, dirs_environ, dirs_overrides, log_dir, spool_dir
from tests.support.tools import promtool_check_metrics

ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_S = 30.0
MV = {"model": "m", "version": "1"}


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """run_serve configures logging globally; put structlog and the root logger back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _own_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """run_serve reads os.environ: its spool and NDJSON folders go under tmp_path, not var/."""
    for key, value in dirs_environ(tmp_path).items():
        monkeypatch.setenv(key, value)


def _drop_modelwatch_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the developer's MODELWATCH_* keys, all but the folders ``_own_folders`` set."""
    for key in [k for k in os.environ if k.startswith("MODELWATCH_") and k not in KEYS]:
        monkeypatch.delenv(key)


def _profile() -> Profile:
    rng = np.random.default_rng(3)
    return make_profile(
        numeric={"x": rng.normal(0, 1, 1000)},
        categorical={"colour": rng.choice(["red", "blue"], 1000).tolist()},
        prediction=rng.choice(["0", "1"], 1000).tolist(),
        prediction_kind="categorical",
    )


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    """A valid profile file for model m, version 1."""
    path = tmp_path / "m.json"
    dump_profile(_profile(), path)
    return path


def _events(n: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "model": "m",
        "version": "1",
        "events": [
            {
                "id": f"e{i}",
                "timestamp": now,
                "latency_seconds": 0.02,
                "status": "ok" if i % 4 else "error",
                "features": {"x": float(i % 7) - 3.0, "colour": "red" if i % 2 else "blue"},
                "prediction": str(i % 2),
            }
            for i in range(n)
        ],
    }


def _settings(profile_path: Path, **env: str) -> Settings:
    return Settings.from_sources(
        env,
        {
            "profiles": [str(profile_path)],
            "ingest_addr": "127.0.0.1:0",
            "metrics_addr": "127.0.0.1:0",
            **dirs_overrides(profile_path.parent),
        },
    )


def _run_with_sidecar(
    settings: Settings, body: Callable[[Sidecar, httpx.AsyncClient], Awaitable[None]]
) -> None:
    async def main() -> None:
        async with (
            Sidecar(settings, [_profile()], logger=get_logger()) as sidecar,
            httpx.AsyncClient(timeout=10) as client,
        ):
            await body(sidecar, client)

    asyncio.run(main())


# --------------------------------------------------------------------------- in-process stack


def test_posted_events_show_up_in_metrics(profile_path: Path) -> None:
    """Events POSTed to the ingest listener are counted on the metrics listener's /metrics."""

    async def body(sidecar: Sidecar, client: httpx.AsyncClient) -> None:
        ingest = f"http://127.0.0.1:{sidecar.ingest_port}"
        metrics = f"http://127.0.0.1:{sidecar.metrics_port}/metrics"
        before = (await client.get(metrics)).text
        assert sample_value(before, "modelwatch_predictions_total", **MV, status="ok") == 0
        answer = await client.post(f"{ingest}/v1/events", json=_events(40))
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] == 40
        after = (await client.get(metrics)).text
        assert sample_value(after, "modelwatch_predictions_total", **MV, status="ok") == 30
        assert sample_value(after, "modelwatch_predictions_total", **MV, status="error") == 10
        assert sample_value(after, "modelwatch_prediction_latency_seconds_count", **MV) == 40
        assert sample_value(after, "modelwatch_events_accepted_total") == 40
        assert sample_value(after, "process_cpu_seconds_total") is not None

    _run_with_sidecar(_settings(profile_path), body)


def test_live_exposition_passes_promtool(profile_path: Path) -> None:
    """The exposition served over HTTP, after traffic, passes promtool check metrics cleanly."""
    captured: list[str] = []

    async def body(sidecar: Sidecar, client: httpx.AsyncClient) -> None:
        ingest = f"http://127.0.0.1:{sidecar.ingest_port}"
        await client.post(f"{ingest}/v1/events", json=_events(150))
        answer = await client.get(f"http://127.0.0.1:{sidecar.metrics_port}/metrics")
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        captured.append(answer.text)

    _run_with_sidecar(_settings(profile_path), body)
    result = promtool_check_metrics(captured[0])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_openmetrics_is_served_when_asked_for(profile_path: Path) -> None:
    """A scraper that accepts OpenMetrics gets it, terminated by # EOF."""

    async def body(sidecar: Sidecar, client: httpx.AsyncClient) -> None:
        answer = await client.get(
            f"http://127.0.0.1:{sidecar.metrics_port}/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        )
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        assert answer.text.endswith("# EOF\n")

    _run_with_sidecar(_settings(profile_path), body)


def test_listeners_serve_only_their_own_paths(profile_path: Path) -> None:
    """The metrics listener has only GET /metrics; the ingest listener has no /metrics."""

    async def body(sidecar: Sidecar, client: httpx.AsyncClient) -> None:
        ingest = f"http://127.0.0.1:{sidecar.ingest_port}"
        metrics = f"http://127.0.0.1:{sidecar.metrics_port}"
        assert (await client.post(f"{metrics}/v1/events", json=_events(1))).status_code == 404
        assert (await client.get(f"{metrics}/healthz")).status_code == 404
        refused = await client.post(f"{metrics}/metrics")
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
        assert (await client.get(f"{ingest}/metrics")).status_code == 404
        assert (await client.get(f"{ingest}/healthz")).status_code == 200

    _run_with_sidecar(_settings(profile_path), body)


def test_responses_carry_no_server_header(profile_path: Path) -> None:
    """Neither listener announces its server software."""

    async def body(sidecar: Sidecar, client: httpx.AsyncClient) -> None:
        for port, path in ((sidecar.metrics_port, "/metrics"), (sidecar.ingest_port, "/healthz")):
            answer = await client.get(f"http://127.0.0.1:{port}{path}")
            assert "server" not in answer.headers

    _run_with_sidecar(_settings(profile_path), body)


def test_a_taken_port_is_a_config_error(profile_path: Path) -> None:
    """Binding an address already in use fails with ConfigError naming the setting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings.from_sources(
            {},
            {
                "profiles": [str(profile_path)],
                "ingest_addr": f"127.0.0.1:{port}",
                "metrics_addr": "127.0.0.1:0",
                **dirs_overrides(profile_path.parent),
            },
        )
        sidecar = Sidecar(settings, [_profile()], logger=get_logger())
        with pytest.raises(ConfigError) as info:
            asyncio.run(sidecar.start())
    assert set(info.value.problems) == {"MODELWATCH_INGEST_ADDR"}


# --------------------------------------------------------------------------- run_serve


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_flags_map_to_settings() -> None:
    """Every serve flag lands in the Namespace under the setting's name; --profile repeats."""
    args = _args("--profile", "a.json", "--profile", "b.json", "--window-seconds", "5")
    assert args.profiles == ["a.json", "b.json"]
    assert args.window_seconds == "5"
    assert args.alpha is None


def test_bad_settings_exit_2_naming_every_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], profile_path: Path
) -> None:
    """Invalid settings end run_serve with 2 and one log line naming each bad key."""
    monkeypatch.setenv("MODELWATCH_ALPHA", "2")
    status = run_serve(_args("--profile", str(profile_path), "--max-events", "none"))
    assert status == 2
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["log.level"] == "error"
    assert "MODELWATCH_ALPHA" in line["message"]
    assert "--max-events" in line["message"]


def test_bad_profile_exits_2_naming_file_and_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A profile with a bad field ends run_serve with 2 and a line naming the file and field."""
    _drop_modelwatch_keys(monkeypatch)
    doc = profile_to_json(_profile())
    doc["features"][0]["psi"]["shares"][0] = 5.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert run_serve(_args("--profile", str(bad))) == 2
    errors = [line for line in _json_lines(capsys.readouterr().err) if line["log.level"] == "error"]
    assert len(errors) == 1
    assert str(bad) in errors[0]["message"]
    assert errors[0]["field"] == "features[0].psi.shares"


def test_two_profiles_for_one_model_version_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two files for the same model version end run_serve with 2, naming the second file."""
    _drop_modelwatch_keys(monkeypatch)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    dump_profile(_profile(), first)
    dump_profile(_profile(), second)
    assert run_serve(_args("--profile", str(first), "--profile", str(second))) == 2
    errors = [line for line in _json_lines(capsys.readouterr().err) if line["log.level"] == "error"]
    assert [e["file"] for e in errors] == [str(second)]
    assert str(first) in errors[0]["message"]


def test_too_many_window_slots_exit_2_before_allocating(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], profile_path: Path
) -> None:
    """A slot so short that the window needs 10^8 slots ends run_serve with 2 naming both keys."""
    monkeypatch.setenv("MODELWATCH_SLOT_SECONDS", "0.001")
    monkeypatch.setenv("MODELWATCH_WINDOW_SECONDS", "100000")
    assert run_serve(_args("--profile", str(profile_path))) == 2
    (line,) = _json_lines(capsys.readouterr().err)
    assert "MODELWATCH_SLOT_SECONDS" in line["problems"]
    assert "MODELWATCH_WINDOW_SECONDS" in line["message"]
    assert "100000000 window slots" in line["message"]


def test_running_out_of_memory_for_the_monitors_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], profile_path: Path
) -> None:
    """A MemoryError while building the monitors ends run_serve with 2 and one clear line."""
    _drop_modelwatch_keys(monkeypatch)

    def no_memory(*_: object) -> object:
        raise MemoryError("Unable to allocate 3.14 TiB for an array")

    monkeypatch.setattr("sidecar.server.MonitorRegistry.from_profiles", no_memory)
    args = _args(
        "--profile", str(profile_path), "--ingest-addr", "127.0.0.1:0",
        "--metrics-addr", "127.0.0.1:0",
    )  # fmt: skip
    assert run_serve(args) == 2
    errors = [line for line in _json_lines(capsys.readouterr().err) if line["log.level"] == "error"]
    assert len(errors) == 1
    message = errors[0]["message"]
    assert "not enough memory for the drift windows" in message
    assert "MODELWATCH_WINDOW_SECONDS" in message
    assert "MODELWATCH_SLOT_SECONDS" in message
    assert "3.14 TiB" in message


def test_a_stalled_body_is_answered_408_on_a_real_socket(profile_path: Path) -> None:
    """A client that declares 10 body bytes and sends 2 gets 408 timeout and a closed connection."""
    settings = _settings(profile_path, MODELWATCH_BODY_TIMEOUT_SECONDS="0.2")
    answer = bytearray()

    async def body(sidecar: Sidecar, _: httpx.AsyncClient) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ingest_port)
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{}"
        )
        await writer.drain()
        # read() returns at EOF: the server must answer and close without the missing 8 bytes.
        answer.extend(await asyncio.wait_for(reader.read(), STARTUP_DEADLINE_S))
        writer.close()
        assert sidecar.counters.requests_rejected["timeout"] == 1

    _run_with_sidecar(settings, body)
    head, _, payload = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    error = json.loads(payload)["error"]
    assert (error["status"], error["reason"], error["field"]) == (408, "timeout", "body")
    assert "2 bytes of 10 received" in error["message"]


# --------------------------------------------------------------------------- the real process


class _Process:
    """A ``python -m sidecar serve`` subprocess whose JSON log lines are read as they come."""

    def __init__(self, *argv: str, folders: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELWATCH_")}
        env.update(dirs_environ(folders))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def __enter__(self) -> _Process:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STARTUP_DEADLINE_S)
        self._pump_thread.join(timeout=STARTUP_DEADLINE_S)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, message: str) -> dict[str, Any]:
        """The first log line with ``message``; fails when the deadline passes first."""
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(raw)
            if raw.startswith("{") and json.loads(raw)["message"] == message:
                return dict(json.loads(raw))
        pytest.fail(f"no {message!r} log line; got:\n{''.join(self.seen)}")


def test_serve_process_end_to_end(profile_path: Path) -> None:
    """The real process logs its ports, ingests, serves clean metrics and exits 0 on SIGTERM.

    Its spool and prediction logs are in the folders it was given, every event logged once.
    """
    with _Process(
        "--profile",
        str(profile_path),
        "--ingest-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        folders=profile_path.parent,
    ) as proc:
        starting = proc.wait_for("starting")
        assert starting["config"]["ingest_addr"] == "127.0.0.1:0"
        loaded = proc.wait_for("profile loaded")
        assert (loaded["model"], loaded["version"]) == ("m", "1")
        listening = proc.wait_for("listening")
        ingest = f"http://127.0.0.1:{listening['ingest_port']}"
        metrics = f"http://127.0.0.1:{listening['metrics_port']}"
        with httpx.Client(timeout=10) as client:
            assert client.post(f"{ingest}/v1/events", json=_events(25)).status_code == 202
            exposition = client.get(f"{metrics}/metrics").text
            assert client.post(f"{metrics}/v1/events", json=_events(1)).status_code == 404
            assert client.get(f"{ingest}/metrics").status_code == 404
        assert sample_value(exposition, "modelwatch_events_accepted_total") == 25
        result = promtool_check_metrics(exposition)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=STARTUP_DEADLINE_S) == 0
        proc.wait_for("stopped")
    assert spool_dir(profile_path.parent).is_dir()
    lines = [
        json.loads(line)
        for path in log_dir(profile_path.parent).glob("predictions-*.ndjson")
        for line in path.read_bytes().splitlines()
    ]
    assert sorted(line["create"]["_id"] for line in lines if "create" in line) == sorted(
        f"e{i}" for i in range(25)
    )


def test_serve_process_with_too_many_slots_exits_2(profile_path: Path) -> None:
    """The real process refuses a 10^8-slot window with exit 2 instead of a numpy traceback."""
    overrides = {"profiles": [str(profile_path)], "slot_seconds": "0.001"}
    with pytest.raises(ConfigError) as expected:
        Settings.from_sources({}, {**overrides, "window_seconds": "100000"})
    argv = ("--profile", str(profile_path), "--slot-seconds", "0.001")
    window = ("--window-seconds", "100000", "--ingest-addr", "127.0.0.1:0")
    with _Process(*argv, *window, folders=profile_path.parent) as proc:
        assert proc.proc.wait(timeout=STARTUP_DEADLINE_S) == 2
        line = proc.wait_for(str(expected.value))
        assert "--window-seconds / --slot-seconds" in line["message"]
        assert "100000000 window slots" in line["message"]


def test_serve_process_with_bad_profile_exits_2(tmp_path: Path) -> None:
    """The real process refuses a profile with a bad field: exit 2, the field in the message."""
    doc = profile_to_json(_profile())
    del doc["features"][1]["distinct"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with _Process("--profile", str(bad), "--ingest-addr", "127.0.0.1:0", folders=tmp_path) as proc:
        assert proc.proc.wait(timeout=STARTUP_DEADLINE_S) == 2
        line = proc.wait_for(f"{bad}: features[1].distinct: is required")
        assert line["log.level"] == "error"
