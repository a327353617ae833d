"""Elasticsearch documents (ECS field names) for prediction events and drift snapshots.

One prediction event becomes one document in the data stream
``logs-modelwatch.predictions-<namespace>``; one drift snapshot becomes one document per feature
plus one per model in ``metrics-modelwatch.drift-<namespace>``. Every document carries a stable
``_id`` (the event id; a hash of model, version, feature and time for drift), so a replay after
a crash or an outage is refused as a duplicate instead of indexed twice. The field layout and
its mappings (``sidecar.es_setup``) are documented in ``docs/elasticsearch.md``; keep the three
in step. Nothing here does I/O: sinks ship what this module builds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from sidecar.redaction import Redaction
from sidecar.snapshot import DriftSnapshot, FeatureDrift

ECS_VERSION = "8.11.0"
PREDICTIONS_DATASET = "modelwatch.predictions"
DRIFT_DATASET = "modelwatch.drift"
EVENT_MODULE = "modelwatch"
DEFAULT_NAMESPACE = "default"
DEFAULT_SERVICE_NAME = "modelwatch-sidecar"
MAX_ID_BYTES = 512
"""Elasticsearch refuses longer ``_id`` values; longer event ids are shipped under a hash."""

KUBERNETES_FIELDS = ("pod.name", "namespace", "node.name")
"""The ``kubernetes.*`` keys a builder accepts (the downward API gives all three)."""

REQUEST_ID_ATTRIBUTE = "request_id"
"""The event attribute the model server puts its request id in; it is also written as ECS
``http.request.id`` so prediction documents join the server's own log lines on one field."""
_OUTCOMES = {"ok": "success", "error": "failure"}
_NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Document:
    """One document to ship: its data stream (``index``), ``_id`` and ``_source``."""

    index: str
    id: str
    source: dict[str, object]

    def bulk_lines(self) -> bytes:
        """The ``_bulk`` form: a ``create`` action line, then the source line, each with a newline.

        Raises ``TypeError`` when the source holds a value JSON cannot carry; NaN and infinities
        become ``null``.
        """
        # The action line is ``{"create":{"_index":…,"_id":…}}`` with its constant head cached:
        # the same bytes as dumping the action object, for a fraction of the work.
        return b"".join(
            (
                _action_head(self.index),
                orjson.dumps(self.id),
                b"}}\n",
                orjson.dumps(self.source),
                b"\n",
            )
        )


@dataclass(frozen=True, slots=True)
class PredictionTemplate:
    """What every prediction document of one request shares, as ``predictions`` lays it out.

    For ``sidecar._ship_documents``, which builds the same documents in one pass per event.
    """

    index: str
    model: dict[str, str]
    created: str | None
    service: dict[str, str]
    data_stream: dict[str, str]
    kubernetes: dict[str, object] | None
    redaction: Redaction | None


@lru_cache(maxsize=64)
def _action_head(index: str) -> bytes:
    return b'{"create":{"_index":%b,"_id":' % orjson.dumps(index)


def predictions_stream(namespace: str) -> str:
    """The data stream prediction documents go to (``logs-modelwatch.predictions-<ns>``)."""
    return f"logs-{PREDICTIONS_DATASET}-{namespace}"


def drift_stream(namespace: str) -> str:
    """The data stream drift documents go to (``metrics-modelwatch.drift-<ns>``)."""
    return f"metrics-{DRIFT_DATASET}-{namespace}"


def validate_namespace(namespace: str) -> str:
    """``namespace`` if Elasticsearch accepts it as a data stream namespace, else ``ValueError``.

    The rules are the data stream naming scheme's: lowercase, at most 100 bytes, and none of
    backslash, ``/ * ? " < > | , # :``, ``-`` or spaces.
    """
    bad = set('\\/*?"<>|,#: -') & set(namespace)
    if not namespace:
        raise ValueError("namespace must not be empty")
    if namespace != namespace.lower():
        raise ValueError(f"namespace must be lowercase, got {namespace!r}")
    if bad:
        raise ValueError(f"namespace must not contain {''.join(sorted(bad))!r}, got {namespace!r}")
    if len(namespace.encode()) > 100:
        raise ValueError("namespace must be at most 100 bytes")
    return namespace


class DocumentBuilder:
    """Turns normalised prediction events and drift snapshots into ``Document`` objects.

    The fields every document shares (service, Kubernetes pod, data stream) are built once
    here, so the per-event work is a handful of dict literals. ``kubernetes`` maps keys of
    ``KUBERNETES_FIELDS`` to values (empty values are left out); ``redaction`` drops or
    hashes features before they are put in a document.
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        service_name: str = DEFAULT_SERVICE_NAME,
        kubernetes: Mapping[str, str] | None = None,
        redaction: Redaction | None = None,
    ) -> None:
        self.namespace = validate_namespace(namespace)
        self.predictions_index = predictions_stream(namespace)
        self.drift_index = drift_stream(namespace)
        self._service = {"name": service_name}
        self._kubernetes = _kubernetes_object(kubernetes or {})
        self._redaction = redaction if redaction is not None and redaction.active else None
        self._predictions_stream = {
            "type": "logs",
            "dataset": PREDICTIONS_DATASET,
            "namespace": namespace,
        }
        self._drift_stream = {"type": "metrics", "dataset": DRIFT_DATASET, "namespace": namespace}

    def predictions(
        self,
        model: str,
        version: str,
        events: Iterable[Mapping[str, Any]],
        *,
        received_at: float | None = None,
    ) -> list[Document]:
        """One ECS document per event, ``_id`` = the event id (hashed past 512 bytes).

        ``events`` are normalised as ``ParsedEvents.accepted_events`` (RFC 3339 UTC timestamp,
        status filled in). ``received_at`` (epoch seconds, when the sidecar accepted the
        request) becomes ``event.created``.
        """
        model_object = {"name": model, "version": version}
        created = None if received_at is None else _rfc3339(received_at)
        index = self.predictions_index
        documents: list[Document] = []
        for event in events:
            event_id = event["id"]
            ecs_event: dict[str, object] = {
                "id": event_id,
                "kind": "event",
                "module": EVENT_MODULE,
                "dataset": PREDICTIONS_DATASET,
                "duration": round(event["latency_seconds"] * _NS_PER_SECOND),
                "outcome": _OUTCOMES.get(event.get("status") or "ok", "unknown"),
            }
            if created is not None:
                ecs_event["created"] = created
            features = event["features"]
            if self._redaction is not None:
                features = self._redaction.apply(features)
            ml: dict[str, object] = {
                "model": model_object,
                "features": features,
                "prediction": event.get("prediction"),
            }
            scores = event.get("scores")
            if scores is not None:
                ml["scores"] = scores
            source: dict[str, object] = {
                "@timestamp": event["timestamp"],
                "ecs": {"version": ECS_VERSION},
                "event": ecs_event,
                "service": self._service,
                "data_stream": self._predictions_stream,
                "ml": ml,
            }
            trace_id = event.get("trace_id")
            if trace_id is not None:
                source["trace"] = {"id": trace_id}
            attributes = event.get("attributes")
            if attributes:
                source["labels"] = labels_from(attributes)
                request_id = attributes.get(REQUEST_ID_ATTRIBUTE)
                if isinstance(request_id, str):
                    # The model server's request id, under the ECS field its own logs use.
                    source["http"] = {"request": {"id": request_id}}
            if self._kubernetes is not None:
                source["kubernetes"] = self._kubernetes
            documents.append(Document(index, document_id(event_id), source))
        return documents

    def prediction_template(
        self, model: str, version: str, *, received_at: float | None = None
    ) -> PredictionTemplate:
        """The shared parts of the documents ``predictions`` builds for one request."""
        return PredictionTemplate(
            index=self.predictions_index,
            model={"name": model, "version": version},
            created=None if received_at is None else _rfc3339(received_at),
            service=self._service,
            data_stream=self._predictions_stream,
            kubernetes=self._kubernetes,
            redaction=self._redaction,
        )

    def drift(self, snapshot: DriftSnapshot, wall_time: float) -> list[Document]:
        """One document per feature and one for the model, all stamped ``wall_time``.

        Statistics that are not defined (too few values in the window) are ``null``, never
        NaN, which JSON cannot carry. The ``_id`` hashes model, version, scope, feature and
        the timestamp in milliseconds, so shipping the same snapshot twice stores it once.
        """
        timestamp = _rfc3339(wall_time)
        millis = round(wall_time * 1000)
        model_object = {"name": snapshot.model, "version": snapshot.version}
        documents = [
            self._drift_document(
                snapshot,
                timestamp,
                millis,
                model_object,
                {
                    "scope": "feature",
                    "window_seconds": snapshot.window_seconds,
                    "window_events": snapshot.window_events,
                    **_feature_fields(feature),
                },
            )
            for feature in snapshot.features
        ]
        drifted = sum(1 for feature in snapshot.features if feature.drifted)
        model_fields: dict[str, object] = {
            "scope": "model",
            "window_seconds": snapshot.window_seconds,
            "window_events": snapshot.window_events,
            "correction": snapshot.correction,
            "alpha": snapshot.alpha,
            "features_total": len(snapshot.features),
            "features_drifted": drifted,
        }
        if snapshot.prediction is not None:
            prediction = _feature_fields(snapshot.prediction)
            del prediction["feature"]
            model_fields["prediction"] = prediction
        documents.append(
            self._drift_document(snapshot, timestamp, millis, model_object, model_fields)
        )
        return documents

    def _drift_document(
        self,
        snapshot: DriftSnapshot,
        timestamp: str,
        millis: int,
        model_object: dict[str, str],
        drift: dict[str, object],
    ) -> Document:
        feature = drift.get("feature")
        key = (snapshot.model, snapshot.version, drift["scope"], feature, millis)
        source: dict[str, object] = {
            "@timestamp": timestamp,
            "ecs": {"version": ECS_VERSION},
            "event": {"kind": "metric", "module": EVENT_MODULE, "dataset": DRIFT_DATASET},
            "service": self._service,
            "data_stream": self._drift_stream,
            "ml": {"model": model_object, "drift": drift},
        }
        if self._kubernetes is not None:
            source["kubernetes"] = self._kubernetes
        return Document(self.drift_index, _hashed_id("drift", key), source)


def document_id(event_id: str) -> str:
    """The ``_id`` of an event's document: the id itself, or a hash when it is too long."""
    if len(event_id) * 4 <= MAX_ID_BYTES or len(event_id.encode()) <= MAX_ID_BYTES:
        return event_id
    return _hashed_id("event", (event_id,))


def labels_from(attributes: Mapping[str, object]) -> dict[str, str]:
    """ECS ``labels`` from event attributes: flat string values, no dots in keys.

    ECS labels are keyword values, so numbers and booleans become their JSON text and nested
    objects or arrays their compact JSON; a dot in a key becomes ``_`` so the key is not read
    as an object path.
    """
    labels: dict[str, str] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        labels[key.replace(".", "_")] = text
    return labels


def _feature_fields(drift: FeatureDrift) -> dict[str, object]:
    return {
        "feature": drift.feature,
        "kind": drift.kind,
        "test": drift.test,
        "window_values": drift.window_values,
        "psi": _finite(drift.psi),
        "statistic": _finite(drift.statistic),
        "pvalue": _finite(drift.pvalue),
        "pvalue_adjusted": _finite(drift.pvalue_adjusted),
        "error_bound": _finite(drift.error_bound),
        "drifted": drift.drifted,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _kubernetes_object(fields: Mapping[str, str]) -> dict[str, object] | None:
    unknown = sorted(set(fields) - set(KUBERNETES_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown kubernetes fields {', '.join(unknown)}; "
            f"expected some of {', '.join(KUBERNETES_FIELDS)}"
        )
    out: dict[str, object] = {}
    if pod := fields.get("pod.name"):
        out["pod"] = {"name": pod}
    if namespace := fields.get("namespace"):
        out["namespace"] = namespace
    if node := fields.get("node.name"):
        out["node"] = {"name": node}
    return out or None


def _hashed_id(kind: str, parts: tuple[object, ...]) -> str:
    # JSON keeps the parts apart unambiguously, whatever characters names contain.
    digest = hashlib.sha256(orjson.dumps(parts)).hexdigest()
    return f"{kind}-{digest}"


def _rfc3339(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
