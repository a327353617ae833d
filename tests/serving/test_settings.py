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
