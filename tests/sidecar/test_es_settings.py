"""Elasticsearch settings: parsing, secrets from files, all-at-once errors, masking, the client."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.es_settings import (
    CLIENT_REQUEST_LOGGER,
    SECRET_MASK,
    EsSettings,
    Secret,
    build_client,
    document_builder,
)

API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
PASSWORD = "hunter2-very-secret"  # noqa: S105 - a made-up password to check masking
REDACT_KEY = "redaction-secret-key"


def _problems(environ: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        EsSettings.from_environ(environ)
    return info.value.problems


def test_defaults_mean_the_file_sink() -> None:
    """With no keys set there is no Elasticsearch; verification is on; namespace is default."""
    settings = EsSettings.from_environ({})
    assert not settings.enabled
    assert settings.urls == ()
    assert settings.verify_certs is True
    assert settings.namespace == "default"
    assert settings.request_timeout_seconds == 30.0
    assert not settings.redaction.active


def test_values_are_parsed() -> None:
    """URLs (comma-separated), user/password, timeout, namespace and pod fields are read."""
    settings = EsSettings.from_environ(
        {
            "MODELWATCH_ES_URL": "https://es-0:9200/, https://es-1:9200",
            "MODELWATCH_ES_USERNAME": "shipper",
            "MODELWATCH_ES_PASSWORD": PASSWORD,
            "MODELWATCH_ES_VERIFY_CERTS": "false",
            "MODELWATCH_ES_REQUEST_TIMEOUT_SECONDS": "5",
            "MODELWATCH_ES_NAMESPACE": "prod",
            "MODELWATCH_POD_NAME": "model-7f9",
            "MODELWATCH_POD_NAMESPACE": "ml",
            "MODELWATCH_NODE_NAME": "",
        }
    )
    assert settings.urls == ("https://es-0:9200", "https://es-1:9200")
    assert settings.username == "shipper"
    assert settings.password == Secret(PASSWORD)
    assert settings.verify_certs is False
    assert settings.request_timeout_seconds == 5.0
    assert settings.namespace == "prod"
    assert settings.kubernetes == {"pod.name": "model-7f9", "namespace": "ml"}


def test_secrets_come_from_mounted_files(tmp_path: Path) -> None:
    """*_FILE keys name files whose content (trailing newline stripped) is the secret."""
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    redact_file = tmp_path / "redact-key"
    redact_file.write_text(REDACT_KEY)
    settings = EsSettings.from_environ(
        {
            "MODELWATCH_ES_URL": "http://localhost:9200",
            "MODELWATCH_ES_API_KEY_FILE": str(key_file),
            "MODELWATCH_REDACT_HASH": "email, phone",
            "MODELWATCH_REDACT_DROP": "ssn",
            "MODELWATCH_REDACT_KEY_FILE": str(redact_file),
        }
    )
    assert settings.api_key is not None
    assert settings.api_key.reveal() == API_KEY
    assert settings.redaction.hash == frozenset({"email", "phone"})
    assert settings.redaction.drop == frozenset({"ssn"})
    assert settings.redaction.key == REDACT_KEY.encode()


def test_every_bad_key_is_named_at_once(tmp_path: Path) -> None:
    """One ConfigError lists each bad key with its reason."""
    problems = _problems(
        {
            "MODELWATCH_ES_URL": "ftp://es:9200",
            "MODELWATCH_ES_API_KEY": API_KEY,
            "MODELWATCH_ES_USERNAME": "u",
            "MODELWATCH_ES_CA_FILE": str(tmp_path / "missing.pem"),
            "MODELWATCH_ES_VERIFY_CERTS": "maybe",
            "MODELWATCH_ES_REQUEST_TIMEOUT_SECONDS": "-1",
            "MODELWATCH_ES_NAMESPACE": "Prod",
            "MODELWATCH_REDACT_HASH": "email",
        }
    )
    assert set(problems) == {
        "MODELWATCH_ES_URL",
        "MODELWATCH_ES_API_KEY",
        "MODELWATCH_ES_CA_FILE",
        "MODELWATCH_ES_VERIFY_CERTS",
        "MODELWATCH_ES_REQUEST_TIMEOUT_SECONDS",
        "MODELWATCH_ES_NAMESPACE",
        "MODELWATCH_REDACT_KEY",
    }
    assert "http:// or https://" in problems["MODELWATCH_ES_URL"]


@pytest.mark.parametrize(
    ("environ", "key", "reason"),
    [
        ({"MODELWATCH_ES_USERNAME": "u"}, "MODELWATCH_ES_PASSWORD", "required together"),
        (
            {"MODELWATCH_ES_API_KEY": "a", "MODELWATCH_ES_API_KEY_FILE": "/x"},
            "MODELWATCH_ES_API_KEY",
            "not both",
        ),
        (
            {"MODELWATCH_ES_API_KEY_FILE": "/nonexistent/key"},
            "MODELWATCH_ES_API_KEY_FILE",
            "cannot read /nonexistent/key",
        ),
        (
            {"MODELWATCH_ES_URL": "http://a:9200,https://b:9200"},
            "MODELWATCH_ES_URL",
            "same scheme",
        ),
        (
            {"MODELWATCH_ES_URL": "http://a:9200", "MODELWATCH_ES_VERIFY_CERTS": "true"},
            "MODELWATCH_ES_VERIFY_CERTS",
            "https URLs only",
        ),
        (
            {"MODELWATCH_REDACT_DROP": "a", "MODELWATCH_REDACT_HASH": "a"},
            "MODELWATCH_REDACT_HASH",
            "also in MODELWATCH_REDACT_DROP",
        ),
    ],
)
def test_single_problems_are_explained(environ: dict[str, str], key: str, reason: str) -> None:
    """Each rule names the key to fix and says why."""
    assert reason in _problems(environ)[key]


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    """A URL with user:password is refused, and the error does not repeat the password."""
    with pytest.raises(ConfigError) as info:
        EsSettings.from_environ({"MODELWATCH_ES_URL": f"https://elastic:{PASSWORD}@es:9200"})
    assert "must not contain credentials" in info.value.problems["MODELWATCH_ES_URL"]
    assert PASSWORD not in str(info.value)


def test_secrets_never_show_in_repr_or_redacted_view(tmp_path: Path) -> None:
    """repr, str and redacted() of the settings mask the API key, password and redaction key."""
    with_password = EsSettings.from_environ(
        {
            "MODELWATCH_ES_URL": "https://es:9200",
            "MODELWATCH_ES_USERNAME": "u",
            "MODELWATCH_ES_PASSWORD": PASSWORD,
            "MODELWATCH_REDACT_HASH": "email",
            "MODELWATCH_REDACT_KEY": REDACT_KEY,
        }
    )
    with_key = EsSettings.from_environ({"MODELWATCH_ES_API_KEY": API_KEY})
    for settings in (with_password, with_key):
        shown = f"{settings!r} {settings} {settings.redacted()}"
        for secret in (PASSWORD, API_KEY, REDACT_KEY):
            assert secret not in shown
    assert with_password.redacted()["es_password"] == SECRET_MASK
    assert with_key.redacted()["es_api_key"] == SECRET_MASK
    assert str(Secret(PASSWORD)) == SECRET_MASK


def test_client_is_built_without_retries_and_with_the_credentials() -> None:
    """build_client gives a client with max_retries=0 and the API key header, offline."""
    settings = EsSettings.from_environ(
        {"MODELWATCH_ES_URL": "http://127.0.0.1:1", "MODELWATCH_ES_API_KEY": API_KEY}
    )
    client = build_client(settings)
    try:
        assert client._max_retries == 0  # the per-request options the client sends with
        assert client._retry_on_timeout is False
        assert client._headers["authorization"] == f"ApiKey {API_KEY}"
        assert API_KEY not in repr(client)
    finally:
        client.close()


def test_building_a_client_quiets_its_per_request_info_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """build_client raises the client's request logger to WARNING, so bulks log nothing at info."""
    request_logger = logging.getLogger(CLIENT_REQUEST_LOGGER)
    monkeypatch.setattr(request_logger, "level", logging.NOTSET)
    client = build_client(EsSettings.from_environ({"MODELWATCH_ES_URL": "http://127.0.0.1:1"}))
    client.close()
    assert request_logger.level == logging.WARNING


def test_https_client_gets_the_ca_file(tmp_path: Path) -> None:
    """With https, the CA file and verification setting reach the client's node config."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed until a connection is made")
    settings = EsSettings.from_environ(
        {"MODELWATCH_ES_URL": "https://es:9200", "MODELWATCH_ES_CA_FILE": str(ca)}
    )
    client = build_client(settings)
    try:
        [node] = client.transport.node_pool.all()
        assert node.config.ca_certs == str(ca)
        assert node.config.verify_certs is True
    finally:
        client.close()


def test_building_a_client_without_a_url_is_a_config_error() -> None:
    """build_client refuses settings with no URL, naming MODELWATCH_ES_URL."""
    with pytest.raises(ConfigError, match="MODELWATCH_ES_URL"):
        build_client(EsSettings())


def test_document_builder_follows_the_settings() -> None:
    """document_builder uses the namespace, pod fields and redaction from the settings."""
    settings = EsSettings.from_environ(
        {
            "MODELWATCH_ES_NAMESPACE": "staging",
            "MODELWATCH_POD_NAME": "p",
            "MODELWATCH_REDACT_DROP": "secret",
        }
    )
    builder = document_builder(settings)
    event = {
        "id": "1",
        "timestamp": "2026-01-01T00:00:00Z",
        "latency_seconds": 0.1,
        "features": {"secret": 1, "open": 2},
        "prediction": 0,
    }
    [document] = builder.predictions("m", "1", [event])
    assert document.index == "logs-modelwatch.predictions-staging"
    assert document.source["kubernetes"] == {"pod": {"name": "p"}}
    assert document.source["ml"]["features"] == {"open": 2}
