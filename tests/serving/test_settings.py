"""The model server's settings: defaults, parsing, and every bad key named at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.settings import ServingSettings
from sidecar.errors import ConfigError
from sidecar.settings import SECRET_MASK, Address


def test_defaults_need_only_the_model_uri() -> None:
    """With only MODELWATCH_MODEL_URI set, every other setting has its documented default."""
    settings = ServingSettings.from_environ({"MODELWATCH_MODEL_URI": "/models/m"})
    assert settings.model_uri == Path("/models/m")
    assert settings.serving_addr == Address("0.0.0.0", 8080)
    assert settings.sidecar_url == "http://127.0.0.1:8081"
    assert (settings.max_batch_size, settings.max_wait_ms, settings.max_instances) == (
        32,
        2.0,
        1000,
    )
    assert settings.log_sample_rate == 1.0
    assert settings.logging_enabled is True
    assert settings.ingest_token is None


def test_values_are_parsed() -> None:
    """Every key is read and typed; the token is masked in the start-up view."""
    settings = ServingSettings.from_environ(
        {
            "MODELWATCH_MODEL_URI": "m.onnx",
            "MODELWATCH_SERVING_ADDR": "[::1]:9000",
            "MODELWATCH_SIDECAR_URL": "http://sidecar:8081/",
            "MODELWATCH_INGEST_TOKEN": "tok",
            "MODELWATCH_MAX_BATCH_SIZE": "64",
            "MODELWATCH_MAX_WAIT_MS": "0.5",
            "MODELWATCH_MAX_INSTANCES": "10_000",
            "MODELWATCH_LOG_SAMPLE_RATE": "0.25",
            "MODELWATCH_LOGGING_ENABLED": "false",
        }
    )
    assert settings.serving_addr == Address("::1", 9000)
    assert settings.sidecar_url == "http://sidecar:8081"
    assert settings.max_batch_size == 64
    assert settings.max_wait_seconds == 0.0005
    assert settings.max_instances == 10_000
    assert settings.log_sample_rate == 0.25
    assert settings.logging_enabled is False
    assert settings.redacted()["ingest_token"] == SECRET_MASK


def test_every_bad_key_is_named_at_once() -> None:
    """One ConfigError lists each bad key with its reason, including the missing model URI."""
    with pytest.raises(ConfigError) as caught:
        ServingSettings.from_environ(
            {
                "MODELWATCH_MAX_BATCH_SIZE": "0",
                "MODELWATCH_MAX_WAIT_MS": "soon",
                "MODELWATCH_LOG_SAMPLE_RATE": "1.5",
                "MODELWATCH_LOGGING_ENABLED": "maybe",
                "MODELWATCH_SIDECAR_URL": "sidecar:8081",
                "MODELWATCH_SERVING_ADDR": "8080",
            }
        )
    problems = caught.value.problems
    assert set(problems) == {
        "MODELWATCH_MODEL_URI",
        "MODELWATCH_MAX_BATCH_SIZE",
        "MODELWATCH_MAX_WAIT_MS",
        "MODELWATCH_LOG_SAMPLE_RATE",
        "MODELWATCH_LOGGING_ENABLED",
        "MODELWATCH_SIDECAR_URL",
        "MODELWATCH_SERVING_ADDR",
    }
    assert problems["MODELWATCH_MAX_BATCH_SIZE"] == "must be at least 1, got 0"
    assert problems["MODELWATCH_LOG_SAMPLE_RATE"] == "must lie in [0, 1], got 1.5"


def test_a_unix_socket_url_is_accepted_as_written() -> None:
    """MODELWATCH_SIDECAR_URL may name the sidecar's Unix socket: unix:// and an absolute path."""
    settings = ServingSettings.from_environ(
        {
            "MODELWATCH_MODEL_URI": "/models/m",
            "MODELWATCH_SIDECAR_URL": " unix:///var/run/modelwatch/ingest.sock ",
        }
    )
    assert settings.sidecar_url == "unix:///var/run/modelwatch/ingest.sock"
    assert settings.redacted()["sidecar_url"] == "unix:///var/run/modelwatch/ingest.sock"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        pytest.param("unix://run/ingest.sock", "must be absolute", id="relative"),
        pytest.param("unix:/run/ingest.sock", "must start with", id="one slash"),
        pytest.param("unix://", "absolute path", id="no path"),
        pytest.param("unix:///run/ingest.sock?mode=1", "without ?query", id="query"),
        pytest.param("unix:///run/ingest.sock#x", "without ?query", id="fragment"),
        pytest.param("unix:///run/modelwatch/", "names a directory", id="directory"),
        pytest.param("unix:///" + "s" * 107, "108 bytes", id="too long"),
        pytest.param("ftp://sidecar:21", "unix://", id="other scheme"),
    ],
)
def test_a_bad_sidecar_url_is_refused_naming_the_key(url: str, words: str) -> None:
    """A unix:// URL without an absolute socket path, or with extras, is an error on the key."""
    with pytest.raises(ConfigError) as caught:
        ServingSettings.from_environ(
            {"MODELWATCH_MODEL_URI": "/models/m", "MODELWATCH_SIDECAR_URL": url}
        )
    assert set(caught.value.problems) == {"MODELWATCH_SIDECAR_URL"}
    assert words in caught.value.problems["MODELWATCH_SIDECAR_URL"]


def test_the_longest_socket_path_linux_takes_is_accepted() -> None:
    """A socket path of exactly 107 bytes, the most sun_path holds with its NUL, is accepted."""
    url = "unix:///" + "s" * 106
    settings = ServingSettings.from_environ(
        {"MODELWATCH_MODEL_URI": "/models/m", "MODELWATCH_SIDECAR_URL": url}
    )
    assert settings.sidecar_url == url
