"""``python -m serving`` as a real process: start-up failures, serving, and a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.onnx_models import build_broken, build_classifier

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


def _env(**values: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MODELWATCH_")}
    return {**keep, "PYTHONPATH": str(ROOT), **values}


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def _lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_bad_settings_exit_2_naming_every_key() -> None:
    """Bad settings stop the process with exit 2 and one line naming each bad key."""
    result = _run(_env(MODELWATCH_MAX_BATCH_SIZE="0", MODELWATCH_LOG_SAMPLE_RATE="2"))
    assert result.returncode == 2
    (line,) = [r for r in _lines(result.stderr) if r["log.level"] == "error"]
    assert set(line["problems"]) == {
        "MODELWATCH_MODEL_URI",
        "MODELWATCH_MAX_BATCH_SIZE",
        "MODELWATCH_LOG_SAMPLE_RATE",
    }


@pytest.mark.slow
def test_missing_metadata_exits_2(tmp_path: Path) -> None:
    """A model file without metadata.json beside it is refused before listening."""
    (tmp_path / "model.onnx").write_bytes(b"x")
    result = _run(_env(MODELWATCH_MODEL_URI=str(tmp_path / "model.onnx")))
    assert result.returncode == 2
    assert "no metadata.json next to the model" in result.stderr


@pytest.mark.slow
def test_a_broken_model_exits_1_with_the_reason(tmp_path: Path) -> None:
    """An ONNX file that cannot load ends the process with exit 1 and the runtime's reason."""
    build_broken(tmp_path)
    result = _run(_env(MODELWATCH_MODEL_URI=str(tmp_path), MODELWATCH_SERVING_ADDR="127.0.0.1:0"))
    assert result.returncode == 1
    errors = [r for r in _lines(result.stderr) if r["log.level"] == "error"]
    assert errors[0]["message"] == "model failed to load"
    assert "ONNX Runtime cannot load it" in errors[0]["error"]
    assert errors[0]["service.name"] == "modelwatch-serving"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    build_classifier(tmp_path / "model")
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving"],
            cwd=ROOT,
            env=_env(
                MODELWATCH_MODEL_URI=str(tmp_path / "model"),
                MODELWATCH_SERVING_ADDR="127.0.0.1:0",
                # Nothing listens there: the logger must drop, never fail a prediction.
                MODELWATCH_SIDECAR_URL="http://127.0.0.1:9",
            ),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield process, _port(process, stderr_path), stderr_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)


def _port(process: subprocess.Popen[bytes], stderr_path: Path) -> int:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for record in _lines(stderr_path.read_text()):
            if record["message"] == "listening":
                return int(record["port"])
        assert process.poll() is None, stderr_path.read_text()
        time.sleep(0.02)
    raise AssertionError("the server did not log its port: " + stderr_path.read_text())


@pytest.mark.slow
def test_serves_then_stops_cleanly_on_sigterm(
    server: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    """The process predicts with the sidecar down, and SIGTERM ends it with exit 0 and 'stopped'."""
    process, port, stderr_path = server
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE
    while httpx.get(f"{base}/readyz").status_code != 200:
        assert time.monotonic() < deadline, stderr_path.read_text()
        time.sleep(0.02)
    row = {"mean_radius": 20.0, "mean_texture": 10.0, "size_class": "large"}
    answer = httpx.post(f"{base}/v1/models/tumour:predict", json={"instances": [row]})
    assert answer.status_code == 200
    assert answer.json()["predictions"] == [1]
    metrics = httpx.get(f"{base}/metrics").text
    assert 'modelwatch_logger_events_total{model="tumour",outcome="sent",version="3"}' in metrics
    process.send_signal(signal.SIGTERM)
    assert process.wait(DEADLINE) == 0
    records = _lines(stderr_path.read_text())
    messages = [r["message"] for r in records]
    assert "model loaded" in messages
    assert messages[-1] == "stopped"
    assert {r["service.name"] for r in records} == {"modelwatch-serving"}


def test_long_lived_objects_are_frozen_after_the_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading collects, then freezes what is alive, after the warm-up prediction and not before."""
    import serving.server as server_module
    from serving.metadata import load_metadata, locate
    from serving.settings import ServingSettings
    from sidecar.logs import get_logger

    model_dir = tmp_path / "model"
    build_classifier(model_dir)
    location = locate(model_dir)
    metadata = load_metadata(location.metadata_path)
    calls: list[str] = []

    class RecordingGc:
        @staticmethod
        def collect() -> int:
            calls.append("collect")
            return 0

        @staticmethod
        def freeze() -> None:
            calls.append("freeze")

    real_load = server_module.OnnxModel.load

    def load(*args: Any, **kwargs: Any) -> Any:
        model = real_load(*args, **kwargs)
        real_predict = model.predict
        monkeypatch.setattr(
            model, "predict", lambda inputs: (calls.append("warm-up"), real_predict(inputs))[1]
        )
        return model

    monkeypatch.setattr(server_module, "gc", RecordingGc)
    monkeypatch.setattr(server_module.OnnxModel, "load", load)
    settings = ServingSettings.from_environ({"MODELWATCH_MODEL_URI": str(model_dir)})
    server_module._load_model(settings, metadata, location, get_logger())
    assert calls == ["warm-up", "collect", "freeze"]
