"""Documents: ECS prediction documents, drift documents, ids, redaction and the _bulk form."""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any

import orjson
import pytest

from sidecar.documents import (
    MAX_ID_BYTES,
    DocumentBuilder,
    document_id,
    labels_from,
    validate_namespace,
)
from sidecar.redaction import Redaction, hash_value
from sidecar.snapshot import DriftSnapshot, FeatureDrift

KEY = b"redaction-key-for-tests"


def _event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "ev-1",
        "timestamp": "2026-11-25T09:00:00.123Z",
        "latency_seconds": 0.0042,
        "status": "ok",
        "features": {"mean_radius": 14.1, "size_class": "large"},
        "prediction": 1,
        "scores": {"0": 0.13, "1": 0.87},
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "attributes": {"region": "eu"},
    }
    event.update(changes)
    return event


def _one(builder: DocumentBuilder, **changes: Any) -> dict[str, Any]:
    [document] = builder.predictions("breast-cancer", "3", [_event(**changes)])
    return document.source


def _drift(feature: str, *, psi: float = 0.2, drifted: bool = True) -> FeatureDrift:
    return FeatureDrift(
        feature=feature,
        kind="numeric",
        window_values=500,
        psi=psi,
        test="ks",
        statistic=0.3,
        pvalue=0.001,
        pvalue_adjusted=0.002,
        drifted=drifted,
        error_bound=0.01,
    )


def _snapshot(**changes: Any) -> DriftSnapshot:
    values: dict[str, Any] = {
        "model": "breast-cancer",
        "version": "3",
        "computed_at": 12345.0,
        "window_seconds": 3600.0,
        "window_events": 500,
        "correction": "benjamini-hochberg",
        "alpha": 0.05,
        "features": (_drift("mean_radius"), _drift("texture", psi=0.01, drifted=False)),
        "prediction": _drift("__prediction__", psi=0.05, drifted=False),
    }
    values.update(changes)
    return DriftSnapshot(**values)


def test_prediction_document_has_the_ecs_fields() -> None:
    """A prediction becomes one ECS document in the predictions data stream, _id = event id."""
    [document] = DocumentBuilder().predictions("breast-cancer", "3", [_event()])
    assert document.index == "logs-modelwatch.predictions-default"
    assert document.id == "ev-1"
    source = document.source
    assert source["@timestamp"] == "2026-11-25T09:00:00.123Z"
    assert source["event"] == {
        "id": "ev-1",
        "kind": "event",
        "module": "modelwatch",
        "dataset": "modelwatch.predictions",
        "duration": 4_200_000,
        "outcome": "success",
    }
    assert source["service"] == {"name": "modelwatch-sidecar"}
    assert source["trace"] == {"id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    assert source["data_stream"] == {
        "type": "logs",
        "dataset": "modelwatch.predictions",
        "namespace": "default",
    }
    assert source["ml"] == {
        "model": {"name": "breast-cancer", "version": "3"},
        "features": {"mean_radius": 14.1, "size_class": "large"},
        "prediction": 1,
        "scores": {"0": 0.13, "1": 0.87},
    }
    assert source["labels"] == {"region": "eu"}
    assert "kubernetes" not in source


@pytest.mark.parametrize(
    ("latency", "nanoseconds"),
    [(0.0, 0), (0.0042, 4_200_000), (1.5, 1_500_000_000), (1e-9, 1), (3, 3_000_000_000)],
)
def test_duration_is_integer_nanoseconds(latency: float, nanoseconds: int) -> None:
    """event.duration is latency_seconds in whole nanoseconds, an int (ECS maps it as long)."""
    duration = _one(DocumentBuilder(), latency_seconds=latency)["event"]["duration"]
    assert type(duration) is int
    assert duration == nanoseconds


def test_error_status_is_failure_outcome() -> None:
    """An event with status "error" gets event.outcome "failure"."""
    assert _one(DocumentBuilder(), status="error")["event"]["outcome"] == "failure"


def test_optional_fields_are_left_out_when_absent() -> None:
    """Without trace id, scores or attributes the document has no trace, ml.scores or labels."""
    source = _one(DocumentBuilder(), trace_id=None, scores=None, attributes=None)
    assert "trace" not in source
    assert "scores" not in source["ml"]
    assert "labels" not in source
    assert "http" not in source


def test_request_id_attribute_is_also_ecs_http_request_id() -> None:
    """The model server's request_id attribute is a label and ECS http.request.id as well."""
    source = _one(DocumentBuilder(), attributes={"request_id": "req-42", "region": "eu"})
    assert source["http"] == {"request": {"id": "req-42"}}
    assert source["labels"]["request_id"] == "req-42"
    assert "http" not in _one(DocumentBuilder())


def test_received_at_becomes_event_created() -> None:
    """The time the sidecar accepted the request is event.created, RFC 3339 UTC."""
    [document] = DocumentBuilder().predictions("m", "1", [_event()], received_at=1_700_000_000.25)
    assert document.source["event"]["created"] == "2023-11-14T22:13:20.250Z"


def test_kubernetes_fields_are_nested_and_empty_ones_skipped() -> None:
    """Downward-API values become kubernetes.pod.name, namespace and node.name; empty ones not."""
    builder = DocumentBuilder(kubernetes={"pod.name": "p-1", "namespace": "ml", "node.name": ""})
    assert _one(builder)["kubernetes"] == {"pod": {"name": "p-1"}, "namespace": "ml"}


def test_unknown_kubernetes_field_is_refused() -> None:
    """A kubernetes key outside the known three is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"pod\.uid"):
        DocumentBuilder(kubernetes={"pod.uid": "x"})


def test_namespace_names_the_data_streams() -> None:
    """The namespace is the data streams' last part and data_stream.namespace."""
    builder = DocumentBuilder(namespace="prod")
    [document] = builder.predictions("m", "1", [_event()])
    assert document.index == "logs-modelwatch.predictions-prod"
    assert document.source["data_stream"]["namespace"] == "prod"
    assert builder.drift(_snapshot(), 1.0)[0].index == "metrics-modelwatch.drift-prod"


@pytest.mark.parametrize("bad", ["", "Prod", "a-b", "a b", "a*b", "a:b", "x" * 101])
def test_bad_namespaces_are_refused(bad: str) -> None:
    """Namespaces Elasticsearch would refuse in a data stream name are a ValueError."""
    with pytest.raises(ValueError, match="namespace"):
        validate_namespace(bad)


def test_labels_are_flat_strings_without_dots() -> None:
    """Attributes become keyword labels: scalars as text, nested values as JSON, dots as _."""
    labels = labels_from({"region": "eu", "shard": 3, "canary": True, "a.b": {"c": [1]}, "n": None})
    assert labels == {"region": "eu", "shard": "3", "canary": "true", "a_b": '{"c":[1]}'}


def test_long_event_ids_are_hashed_to_fit_elasticsearch() -> None:
    """An id over 512 UTF-8 bytes gets a stable hashed _id; event.id keeps the original."""
    long_id = "é" * 256  # 512 bytes: still fits
    assert document_id(long_id) == long_id
    too_long = "€" * 200  # 600 bytes
    [document] = DocumentBuilder().predictions("m", "1", [_event(id=too_long)])
    assert document.id == document_id(too_long)
    assert len(document.id.encode()) <= MAX_ID_BYTES
    assert document.id != too_long
    assert document.source["event"]["id"] == too_long


def test_redaction_drops_and_hashes_features() -> None:
    """Dropped features vanish; hashed ones become HMAC-SHA256 hex of the value with the key."""
    redaction = Redaction(drop=frozenset({"ssn"}), hash=frozenset({"email", "age"}), key=KEY)
    builder = DocumentBuilder(redaction=redaction)
    features = {"ssn": "123", "email": "a@b.c", "age": 42, "income": 1.5, "zip": None}
    source = _one(builder, features=features)
    expected_email = hmac.new(KEY, b"a@b.c", hashlib.sha256).hexdigest()
    expected_age = hmac.new(KEY, b"42", hashlib.sha256).hexdigest()
    assert source["ml"]["features"] == {
        "email": expected_email,
        "age": expected_age,
        "income": 1.5,
        "zip": None,
    }


def test_hashed_values_join_across_documents() -> None:
    """Equal values hash equal (joins work), 1 and "1" too (one category); other keys differ."""
    assert hash_value(KEY, "x") == hmac.new(KEY, b"x", hashlib.sha256).hexdigest()
    assert hash_value(KEY, 1) == hash_value(KEY, "1")
    assert hash_value(KEY, {"b": 1, "a": 2}) == hash_value(KEY, {"a": 2, "b": 1})
    assert hash_value(KEY, "x") != hash_value(KEY, "y")
    assert hash_value(KEY, "x") != hash_value(b"other-key", "x")


def test_redaction_key_never_shows_in_repr() -> None:
    """The redaction key is a secret: repr of the settings object leaves it out."""
    redaction = Redaction(hash=frozenset({"email"}), key=b"very-secret-key")
    assert "very-secret-key" not in repr(redaction)


@pytest.mark.parametrize(
    ("drop", "hashed", "key", "message"),
    [
        (frozenset({"a"}), frozenset({"a"}), KEY, "both dropped and hashed: a"),
        (frozenset(), frozenset({"a"}), b"", "non-empty redaction key"),
    ],
)
def test_inconsistent_redaction_is_refused(
    drop: frozenset[str], hashed: frozenset[str], key: bytes, message: str
) -> None:
    """A feature both dropped and hashed, or hashing without a key, is a ValueError."""
    with pytest.raises(ValueError, match=message):
        Redaction(drop=drop, hash=hashed, key=key)


def test_drift_gives_one_document_per_feature_and_one_per_model() -> None:
    """A snapshot of two features gives two feature documents and one model document."""
    documents = DocumentBuilder().drift(_snapshot(), 1_764_061_200.0)
    assert [d.source["ml"]["drift"]["scope"] for d in documents] == [
        "feature",
        "feature",
        "model",
    ]
    for document in documents:
        assert document.index == "metrics-modelwatch.drift-default"
        assert document.source["@timestamp"] == "2025-11-25T09:00:00.000Z"
        assert document.source["ml"]["model"] == {"name": "breast-cancer", "version": "3"}
        assert document.source["data_stream"]["type"] == "metrics"
        assert document.source["event"]["kind"] == "metric"


def test_feature_drift_document_carries_every_statistic() -> None:
    """A feature document holds psi, the test, statistic, both p-values, drifted and sizes."""
    feature = DocumentBuilder().drift(_snapshot(), 1.0)[0].source["ml"]["drift"]
    assert feature == {
        "scope": "feature",
        "feature": "mean_radius",
        "kind": "numeric",
        "test": "ks",
        "window_values": 500,
        "window_seconds": 3600.0,
        "window_events": 500,
        "psi": 0.2,
        "statistic": 0.3,
        "pvalue": 0.001,
        "pvalue_adjusted": 0.002,
        "error_bound": 0.01,
        "drifted": True,
    }


def test_model_drift_document_summarises_the_window_and_prediction() -> None:
    """The model document has the window, correction, drifted count and prediction drift."""
    model = DocumentBuilder().drift(_snapshot(), 1.0)[-1].source["ml"]["drift"]
    assert model["window_events"] == 500
    assert model["window_seconds"] == 3600.0
    assert (model["features_total"], model["features_drifted"]) == (2, 1)
    assert (model["correction"], model["alpha"]) == ("benjamini-hochberg", 0.05)
    assert model["prediction"]["psi"] == 0.05
    assert "feature" not in model["prediction"]


def test_model_document_without_prediction_drift() -> None:
    """A profile without a prediction section gives a model document with no prediction."""
    model = DocumentBuilder().drift(_snapshot(prediction=None), 1.0)[-1]
    assert "prediction" not in model.source["ml"]["drift"]


def test_undefined_statistics_are_null_not_nan() -> None:
    """NaN statistics (too few values) are shipped as null, so the JSON stays valid."""
    nan_feature = FeatureDrift(
        "x", "numeric", 3, math.nan, "ks", math.nan, math.nan, math.nan, False, 0.0
    )
    [document, _] = DocumentBuilder().drift(_snapshot(features=(nan_feature,)), 1.0)
    drift = document.source["ml"]["drift"]
    assert drift["psi"] is None
    assert drift["pvalue"] is None
    assert b"NaN" not in document.bulk_lines()


def test_drift_ids_are_stable_and_distinct() -> None:
    """The same snapshot at the same time gets the same ids; another time or feature differs."""
    builder = DocumentBuilder()
    first = [d.id for d in builder.drift(_snapshot(), 100.0)]
    again = [d.id for d in builder.drift(_snapshot(), 100.0)]
    later = [d.id for d in builder.drift(_snapshot(), 101.0)]
    assert first == again
    assert len(set(first)) == 3
    assert not set(first) & set(later)


def test_bulk_lines_are_a_create_action_and_the_source() -> None:
    """bulk_lines is two newline-terminated JSON lines: create with _index and _id, then source."""
    [document] = DocumentBuilder().predictions("m", "1", [_event()])
    action, source, rest = document.bulk_lines().split(b"\n")
    assert rest == b""
    assert orjson.loads(action) == {
        "create": {"_index": "logs-modelwatch.predictions-default", "_id": "ev-1"}
    }
    assert orjson.loads(source) == document.source
