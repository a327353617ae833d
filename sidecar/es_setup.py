"""Installs what the two data streams need in Elasticsearch: an ILM policy and the templates.

``install`` is idempotent: every object it writes carries ``_meta.fingerprint``, a hash of its
whole body (the modelwatch version included), and an object whose stored fingerprint matches
is left alone, so a second run changes nothing and an upgrade rewrites exactly what changed.
Comparing fingerprints rather than bodies keeps it stable across the defaults Elasticsearch
adds when it stores an object. The objects and their mappings are documented in
``docs/elasticsearch.md``; the document layout they map is ``sidecar.documents``.

Objects, for namespace ``<ns>``:

- ILM policy ``modelwatch-<ns>``: rollover in the hot phase, delete after the retention;
- component templates ``modelwatch-ecs@mappings`` (ECS fields shared by both streams),
  ``modelwatch-predictions@mappings`` and ``modelwatch-drift@mappings``;
- index templates ``modelwatch-predictions-<ns>`` and ``modelwatch-drift-<ns>`` for the data
  streams, priority 200 so they win over the built-in ``logs-*-*``/``metrics-*-*`` (100).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError

from sidecar.documents import drift_stream, predictions_stream, validate_namespace
from sidecar.errors import ConfigError, ModelwatchError
from sidecar.es_settings import EsSettings, build_client

TEMPLATE_PRIORITY = 200
TOTAL_FIELDS_LIMIT = 5000
"""Room for wide models: every feature, score and label is a field of the data stream."""
ECS_COMPONENT = "modelwatch-ecs@mappings"
PREDICTIONS_COMPONENT = "modelwatch-predictions@mappings"
DRIFT_COMPONENT = "modelwatch-drift@mappings"
KEYWORD_IGNORE_ABOVE = 1024

_DURATION = re.compile(r"^[1-9]\d*(d|h|m|s|ms)$")
_SIZE = re.compile(r"^[1-9]\d*(b|kb|mb|gb|tb|pb)$")


class SetupError(ModelwatchError):
    """Elasticsearch refused or could not be reached while installing; the message says which."""


class _Logger(Protocol):
    """What ``run_setup`` logs with; structlog's ``FilteringBoundLogger`` is one."""

    def info(self, event: str, *args: Any, **fields: Any) -> Any: ...
    def error(self, event: str, *args: Any, **fields: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Object:
    kind: str
    name: str
    body: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


def install(
    client: Elasticsearch,
    *,
    namespace: str,
    rollover_max_age: str = "1d",
    rollover_max_primary_shard_size: str = "50gb",
    retention_days: int = 30,
) -> list[str]:
    """Create or update the ILM policy and templates; returns what changed, e.g.

    ``["ilm policy modelwatch-default", "index template modelwatch-drift-default"]``; empty
    when everything was already in place. Raises ``ValueError`` for a bad argument (named)
    and ``SetupError`` when Elasticsearch refuses or cannot be reached.
    """
    validate_namespace(namespace)
    if not _DURATION.match(rollover_max_age):
        raise ValueError(
            f"rollover_max_age must look like 1d, 12h or 30m, got {rollover_max_age!r}"
        )
    if not _SIZE.match(rollover_max_primary_shard_size):
        raise ValueError(
            "rollover_max_primary_shard_size must look like 50gb or 500mb, "
            f"got {rollover_max_primary_shard_size!r}"
        )
    if (
        isinstance(retention_days, bool)
        or not isinstance(retention_days, int)
        or retention_days < 1
    ):
        raise ValueError(f"retention_days must be an integer of at least 1, got {retention_days!r}")
    changed: list[str] = []
    for obj in objects(
        namespace=namespace,
        rollover_max_age=rollover_max_age,
        rollover_max_primary_shard_size=rollover_max_primary_shard_size,
        retention_days=retention_days,
    ):
        if _stored_fingerprint(client, obj) != _fingerprint_of(obj):
            _put(client, obj)
            changed.append(obj.label)
    return changed


def run_setup(
    settings: EsSettings,
    logger: _Logger,
    *,
    rollover_max_age: str = "1d",
    rollover_max_primary_shard_size: str = "50gb",
    retention_days: int = 30,
    client_factory: Callable[[EsSettings], Elasticsearch] = build_client,
) -> int:
    """What ``python -m sidecar setup`` does: install, log the outcome, return an exit status.

    0 when installed (changed or not), 1 when Elasticsearch refused or could not be reached,
    2 for a configuration or argument problem. Logs ``es_setup_done`` with ``changed`` (the
    objects written) or ``es_setup_failed`` with ``error``; secrets are never logged.
    """
    try:
        client = client_factory(settings)
    except ConfigError as exc:
        logger.error("es_setup_failed", error=str(exc))
        return 2
    try:
        changed = install(
            client,
            namespace=settings.namespace,
            rollover_max_age=rollover_max_age,
            rollover_max_primary_shard_size=rollover_max_primary_shard_size,
            retention_days=retention_days,
        )
    except ValueError as exc:
        logger.error("es_setup_failed", error=str(exc))
        return 2
    except SetupError as exc:
        logger.error("es_setup_failed", error=str(exc))
        return 1
    finally:
        client.close()
    logger.info(
        "es_setup_done", changed=changed, namespace=settings.namespace, urls=list(settings.urls)
    )
    return 0


def objects(
    *,
    namespace: str,
    rollover_max_age: str = "1d",
    rollover_max_primary_shard_size: str = "50gb",
    retention_days: int = 30,
) -> list[_Object]:
    """Every object ``install`` writes, in dependency order (policy, components, indices)."""
    policy = f"modelwatch-{namespace}"
    meta = _meta()
    settings = {
        "index.lifecycle.name": policy,
        "index.mapping.total_fields.limit": TOTAL_FIELDS_LIMIT,
    }
    return [
        _Object(
            "ilm policy",
            policy,
            {
                "_meta": meta,
                "phases": {
                    "hot": {
                        "min_age": "0ms",
                        "actions": {
                            "rollover": {
                                "max_age": rollover_max_age,
                                "max_primary_shard_size": rollover_max_primary_shard_size,
                            }
                        },
                    },
                    "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}},
                },
            },
        ),
        _Object("component template", ECS_COMPONENT, _component(_ecs_mappings(), meta)),
        _Object(
            "component template", PREDICTIONS_COMPONENT, _component(_prediction_mappings(), meta)
        ),
        _Object("component template", DRIFT_COMPONENT, _component(_drift_mappings(), meta)),
        _Object(
            "index template",
            f"modelwatch-predictions-{namespace}",
            _index_template(
                predictions_stream(namespace),
                [ECS_COMPONENT, PREDICTIONS_COMPONENT],
                settings,
                meta,
            ),
        ),
        _Object(
            "index template",
            f"modelwatch-drift-{namespace}",
            _index_template(
                drift_stream(namespace), [ECS_COMPONENT, DRIFT_COMPONENT], settings, meta
            ),
        ),
    ]


# --------------------------------------------------------------------------- bodies


def _meta() -> dict[str, Any]:
    return {"managed_by": "modelwatch", "modelwatch_version": _version()}


def _version() -> str:
    try:
        return importlib.metadata.version("modelwatch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _component(mappings: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {"template": {"mappings": mappings}, "_meta": meta}


def _index_template(
    pattern: str, composed_of: list[str], settings: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        "index_patterns": [pattern],
        "data_stream": {},
        "composed_of": composed_of,
        "priority": TEMPLATE_PRIORITY,
        "template": {"settings": settings},
        "_meta": meta,
    }


def _keyword() -> dict[str, Any]:
    return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"properties": properties}


def _ecs_mappings() -> dict[str, Any]:
    keyword = {"type": "keyword"}
    constant = {"type": "constant_keyword"}
    return {
        # Feature values and labels that look like dates stay what their template says.
        "date_detection": False,
        "dynamic_templates": [
            {
                "labels_as_keywords": {
                    "path_match": "labels.*",
                    "mapping": _keyword(),
                }
            }
        ],
        "properties": {
            "@timestamp": {"type": "date"},
            "ecs": _object(version=keyword),
            "event": _object(
                id=keyword,
                kind=keyword,
                module=keyword,
                dataset=keyword,
                outcome=keyword,
                duration={"type": "long"},
                created={"type": "date"},
            ),
            "service": _object(name=keyword),
            "trace": _object(id=keyword),
            "http": _object(request=_object(id=keyword)),
            "labels": {"type": "object"},
            "kubernetes": _object(
                pod=_object(name=keyword),
                namespace=keyword,
                node=_object(name=keyword),
            ),
            "data_stream": _object(type=constant, dataset=constant, namespace=constant),
            "ml": _object(model=_object(name=keyword, version=keyword)),
        },
    }


def _prediction_mappings() -> dict[str, Any]:
    double = {"type": "double"}
    return {
        "dynamic_templates": [
            {
                "ml_features_long": {
                    "path_match": "ml.features.*",
                    "match_mapping_type": "long",
                    "mapping": double,
                }
            },
            {
                "ml_features_double": {
                    "path_match": "ml.features.*",
                    "match_mapping_type": "double",
                    "mapping": double,
                }
            },
            {
                "ml_features_string": {
                    "path_match": "ml.features.*",
                    "match_mapping_type": "string",
                    "mapping": _keyword(),
                }
            },
            {
                "ml_features_boolean": {
                    "path_match": "ml.features.*",
                    "match_mapping_type": "boolean",
                    "mapping": {"type": "keyword"},
                }
            },
            {"ml_scores": {"path_match": "ml.scores.*", "mapping": double}},
        ],
        "properties": {
            "ml": _object(
                features={"type": "object"},
                scores={"type": "object"},
                # Class labels and regression outputs share the field: the keyword serves
                # terms aggregations, the numeric sub-field histograms (non-numbers skipped).
                prediction={
                    **_keyword(),
                    "fields": {"numeric": {"type": "double", "ignore_malformed": True}},
                },
            )
        },
    }


def _drift_mappings() -> dict[str, Any]:
    keyword = {"type": "keyword"}
    double = {"type": "double"}
    long = {"type": "long"}
    statistics = {
        "kind": keyword,
        "test": keyword,
        "window_values": long,
        "psi": double,
        "statistic": double,
        "pvalue": double,
        "pvalue_adjusted": double,
        "error_bound": double,
        "drifted": {"type": "boolean"},
    }
    return {
        "properties": {
            "ml": _object(
                drift=_object(
                    scope=keyword,
                    feature=keyword,
                    window_seconds=double,
                    window_events=long,
                    correction=keyword,
                    alpha=double,
                    features_total=long,
                    features_drifted=long,
                    prediction=_object(**statistics),
                    **statistics,
                )
            )
        }
    }


# --------------------------------------------------------------------------- talking to ES


def _fingerprint_of(obj: _Object) -> str:
    return hashlib.sha256(orjson.dumps(obj.body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _with_fingerprint(obj: _Object) -> dict[str, Any]:
    return {**obj.body, "_meta": {**obj.body["_meta"], "fingerprint": _fingerprint_of(obj)}}


def _stored_fingerprint(client: Elasticsearch, obj: _Object) -> str | None:
    try:
        if obj.kind == "ilm policy":
            found = client.ilm.get_lifecycle(name=obj.name).body
            meta = found.get(obj.name, {}).get("policy", {}).get("_meta")
        elif obj.kind == "component template":
            found = client.cluster.get_component_template(name=obj.name).body
            items = found.get("component_templates", [])
            meta = items[0]["component_template"].get("_meta") if items else None
        else:
            found = client.indices.get_index_template(name=obj.name).body
            items = found.get("index_templates", [])
            meta = items[0]["index_template"].get("_meta") if items else None
    except NotFoundError:
        return None
    except (ApiError, TransportError) as exc:
        raise SetupError(f"cannot read {obj.label}: {_describe(exc)}") from exc
    fingerprint = meta.get("fingerprint") if isinstance(meta, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


def _put(client: Elasticsearch, obj: _Object) -> None:
    body = _with_fingerprint(obj)
    try:
        if obj.kind == "ilm policy":
            client.ilm.put_lifecycle(name=obj.name, policy=body)
        elif obj.kind == "component template":
            client.cluster.put_component_template(name=obj.name, body=body)
        else:
            client.indices.put_index_template(name=obj.name, body=body)
    except (ApiError, TransportError) as exc:
        raise SetupError(f"cannot write {obj.label}: {_describe(exc)}") from exc


def _describe(exc: ApiError | TransportError) -> str:
    """The error in words: HTTP status and ``type: reason``, or the transport failure."""
    if isinstance(exc, TransportError):
        return f"cannot reach Elasticsearch ({type(exc).__name__}: {exc.message})"
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        detail = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    else:
        detail = str(error or exc.message)
    hint = " (check the credentials)" if exc.meta.status in (401, 403) else ""
    return f"HTTP {exc.meta.status} {detail}{hint}"
