"""Elasticsearch setup: the objects installed, idempotence, errors, and the mappings in use."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from sidecar.documents import DocumentBuilder
from sidecar.errors import ConfigError
from sidecar.es_settings import EsSettings, Secret, build_client
from sidecar.es_setup import (
    DRIFT_COMPONENT,
    ECS_COMPONENT,
    PREDICTIONS_COMPONENT,
    SetupError,
    install,
    objects,
    run_setup,
)
from sidecar.sinks import ElasticsearchSink, ItemResult, Outcome
from sidecar.snapshot import DriftSnapshot, FeatureDrift
from tests.support.es_server import EsServer, es_server_fixture

API_KEY = "c2VjcmV0LWlkOnNlY3JldC1rZXktdmFsdWU="


class _Log:
    """Collects what run_setup logs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, *args: Any, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def error(self, event: str, *args: Any, **fields: Any) -> None:
        self.lines.append(("error", event, fields))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _by_name(namespace: str = "default", **options: Any) -> dict[str, dict[str, Any]]:
    return {obj.name: obj.body for obj in objects(namespace=namespace, **options)}


def test_index_templates_make_data_streams_that_win_over_the_builtins() -> None:
    """Both index templates match their data stream, create data streams and have priority > 100."""
    bodies = _by_name("prod")
    predictions = bodies["modelwatch-predictions-prod"]
    drift = bodies["modelwatch-drift-prod"]
    assert predictions["index_patterns"] == ["logs-modelwatch.predictions-prod"]
    assert drift["index_patterns"] == ["metrics-modelwatch.drift-prod"]
    for template in (predictions, drift):
        assert template["data_stream"] == {}
        assert template["priority"] > 100
        assert template["template"]["settings"]["index.lifecycle.name"] == "modelwatch-prod"
        assert template["_meta"]["managed_by"] == "modelwatch"
        assert template["_meta"]["modelwatch_version"]
    assert predictions["composed_of"] == [ECS_COMPONENT, PREDICTIONS_COMPONENT]
    assert drift["composed_of"] == [ECS_COMPONENT, DRIFT_COMPONENT]


def test_ilm_policy_rolls_over_and_deletes_as_configured() -> None:
    """The ILM policy has the configured rollover conditions and deletes after the retention."""
    policy = _by_name(
        rollover_max_age="12h", rollover_max_primary_shard_size="10gb", retention_days=7
    )["modelwatch-default"]
    assert policy["phases"]["hot"]["actions"]["rollover"] == {
        "max_age": "12h",
        "max_primary_shard_size": "10gb",
    }
    assert policy["phases"]["delete"] == {"min_age": "7d", "actions": {"delete": {}}}


def test_mappings_type_the_ecs_and_ml_fields() -> None:
    """event.duration is long, @timestamp a date, features numbers double and strings keyword."""
    bodies = _by_name()
    ecs = bodies[ECS_COMPONENT]["template"]["mappings"]
    event = ecs["properties"]["event"]["properties"]
    assert event["duration"] == {"type": "long"}
    assert ecs["properties"]["@timestamp"] == {"type": "date"}
    predictions = bodies[PREDICTIONS_COMPONENT]["template"]["mappings"]
    templates = {
        name: body for entry in predictions["dynamic_templates"] for name, body in entry.items()
    }
    assert templates["ml_features_long"]["mapping"] == {"type": "double"}
    assert templates["ml_features_double"]["mapping"] == {"type": "double"}
    assert templates["ml_features_string"]["mapping"]["type"] == "keyword"
    prediction = predictions["properties"]["ml"]["properties"]["prediction"]
    assert prediction["type"] == "keyword"
    assert prediction["fields"]["numeric"]["type"] == "double"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"rollover_max_age": "1 day"}, "rollover_max_age"),
        ({"rollover_max_primary_shard_size": "50"}, "rollover_max_primary_shard_size"),
        ({"retention_days": 0}, "retention_days"),
        ({"namespace": "Bad-Name"}, "namespace"),
    ],
)
def test_bad_arguments_are_named(options: dict[str, Any], name: str) -> None:
    """A malformed rollover, retention or namespace is a ValueError naming it, before a request."""
    arguments: dict[str, Any] = {"namespace": "default", **options}
    client: Any = None  # never used: validation comes first
    with pytest.raises(ValueError, match=name):
        install(client, **arguments)


def test_unreachable_elasticsearch_is_a_setup_error() -> None:
    """A refused connection raises SetupError saying Elasticsearch cannot be reached."""
    client = Elasticsearch(f"http://127.0.0.1:{_closed_port()}", max_retries=0)
    with pytest.raises(SetupError, match="cannot reach Elasticsearch"):
        install(client, namespace="default")
    client.close()


def test_run_setup_reports_failure_without_secrets() -> None:
    """run_setup returns 1 when Elasticsearch is down and logs an error free of the API key."""
    settings = EsSettings.from_environ(
        {
            "MODELWATCH_ES_URL": f"http://127.0.0.1:{_closed_port()}",
            "MODELWATCH_ES_API_KEY": API_KEY,
        }
    )
    log = _Log()
    assert run_setup(settings, log) == 1
    [(level, event, fields)] = log.lines
    assert (level, event) == ("error", "es_setup_failed")
    assert "cannot reach Elasticsearch" in fields["error"]
    assert API_KEY not in repr(log.lines)


def test_run_setup_without_a_url_is_a_usage_error() -> None:
    """run_setup returns 2 and names MODELWATCH_ES_URL when no Elasticsearch is configured."""
    log = _Log()
    assert run_setup(EsSettings(), log) == 2
    assert "MODELWATCH_ES_URL" in log.lines[0][2]["error"]


def test_run_setup_passes_config_errors_through_as_status_2() -> None:
    """A client factory that refuses the settings gives status 2, logged."""

    def refuse(settings: EsSettings) -> Any:
        raise ConfigError({"MODELWATCH_ES_CA_FILE": "unreadable"})

    log = _Log()
    assert run_setup(EsSettings(urls=("http://x:9200",)), log, client_factory=refuse) == 2
    assert "MODELWATCH_ES_CA_FILE" in log.lines[0][2]["error"]


# --------------------------------------------------------------------------- test server

es_server = es_server_fixture()

EVENT: dict[str, Any] = {
    "timestamp": "2026-11-25T09:00:00.123Z",
    "latency_seconds": 0.004,
    "status": "ok",
    "features": {"mean_radius": 14.1, "size_class": "large", "smoker": True},
    "prediction": 1,
    "scores": {"0": 0.2, "1": 0.8},
    "attributes": {"region": "eu", "shard": 3},
}


@pytest.fixture
def client(es_server: EsServer) -> Iterator[Elasticsearch]:
    """The official client as the sidecar builds it, with an API key, at the test server."""
    settings = EsSettings(urls=(es_server.url,), api_key=Secret(API_KEY))
    client = build_client(settings)
    yield client
    client.close()


def _send(client: Elasticsearch, events: list[dict[str, Any]]) -> list[ItemResult]:
    documents = DocumentBuilder().predictions("breast-cancer", "3", events)
    return ElasticsearchSink(client, refresh=True).send(documents)


def test_install_creates_everything_then_changes_nothing(client: Elasticsearch) -> None:
    """The first run writes all six objects; a second run writes none."""
    first = install(client, namespace="default")
    assert first == [f"{obj.kind} {obj.name}" for obj in objects(namespace="default")]
    assert len(first) == 6
    assert install(client, namespace="default") == []


def test_install_rewrites_only_what_changed(client: Elasticsearch) -> None:
    """A different retention rewrites the ILM policy only."""
    install(client, namespace="default")
    assert install(client, namespace="default", retention_days=90) == [
        "ilm policy modelwatch-default"
    ]
    policy = client.ilm.get_lifecycle(name="modelwatch-default")["modelwatch-default"]["policy"]
    assert policy["phases"]["delete"]["min_age"] == "90d"
    assert policy["_meta"]["fingerprint"]


def test_installed_objects_are_readable_with_meta(client: Elasticsearch) -> None:
    """The stored index template has the pattern, data_stream, priority and _meta it was given."""
    install(client, namespace="prod")
    [entry] = client.indices.get_index_template(name="modelwatch-predictions-prod")[
        "index_templates"
    ]
    template = entry["index_template"]
    assert template["index_patterns"] == ["logs-modelwatch.predictions-prod"]
    assert template["priority"] == 200
    assert "data_stream" in template
    assert template["_meta"]["managed_by"] == "modelwatch"


def test_data_stream_uses_the_modelwatch_mappings(
    es_server: EsServer, client: Elasticsearch
) -> None:
    """After setup, ml.prediction is keyword: a number then a class name are both accepted."""
    install(client, namespace="default")
    first = _send(client, [{**EVENT, "id": "a"}])
    second = _send(client, [{**EVENT, "id": "b", "prediction": "malignant"}])
    assert [r.outcome for r in first + second] == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert "logs-modelwatch.predictions-default" in es_server.data_streams()


def test_without_setup_the_builtin_mapping_would_refuse_mixed_predictions(
    client: Elasticsearch,
) -> None:
    """Control for the test above: the built-in logs template maps a numeric prediction as long."""
    _send(client, [{**EVENT, "id": "a"}])
    [result] = _send(client, [{**EVENT, "id": "b", "prediction": "malignant"}])
    assert result.outcome is Outcome.DEAD


def test_string_into_a_double_feature_is_dead(client: Elasticsearch) -> None:
    """Once a feature is mapped double, a non-numeric string there is DEAD with the reason."""
    install(client, namespace="default")
    assert _send(client, [{**EVENT, "id": "a"}])[0].outcome is Outcome.DELIVERED
    bad = {**EVENT, "id": "b", "features": {**EVENT["features"], "mean_radius": "abc"}}
    [result] = _send(client, [bad])
    assert result.outcome is Outcome.DEAD
    assert result.reason is not None
    assert "ml.features.mean_radius" in result.reason
    assert "document_parsing_exception" in result.reason


def test_drift_documents_are_accepted(es_server: EsServer, client: Elasticsearch) -> None:
    """Drift documents, NaN statistics included, are stored in the drift data stream."""
    install(client, namespace="default")
    nan = float("nan")
    features = (
        FeatureDrift("mean_radius", "numeric", 500, 0.2, "ks", 0.3, 0.001, 0.002, True, 0.01),
        FeatureDrift("size_class", "categorical", 3, nan, "chi2", nan, nan, nan, False, 0.0),
    )
    snapshot = DriftSnapshot(
        "breast-cancer", "3", 1.0, 3600.0, 500, "benjamini-hochberg", 0.05, features, features[0]
    )
    documents = DocumentBuilder().drift(snapshot, 1_764_061_200.0)
    results = ElasticsearchSink(client, refresh=True).send(documents)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
    assert len(es_server.documents("metrics-modelwatch.drift-default")) == 3


def test_refused_credentials_are_a_setup_error_without_the_secret(
    es_server: EsServer, client: Elasticsearch
) -> None:
    """A 401 raises SetupError with the status and a hint, never the API key."""
    es_server.fail_requests(401)
    with pytest.raises(SetupError) as info:
        install(client, namespace="default")
    message = str(info.value)
    assert "HTTP 401" in message
    assert "check the credentials" in message
    assert API_KEY not in message


def test_run_setup_succeeds_against_the_server(es_server: EsServer) -> None:
    """run_setup installs, logs what changed and returns 0; a second run logs no changes."""
    settings = EsSettings(urls=(es_server.url,))
    log = _Log()
    assert run_setup(settings, log) == 0
    assert run_setup(settings, log) == 0
    [(_, event, first), (_, _, second)] = log.lines
    assert event == "es_setup_done"
    assert len(first["changed"]) == 6
    assert second["changed"] == []
