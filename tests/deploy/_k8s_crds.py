"""The structure of the Prometheus Operator's v1 CRDs that modelwatch's manifests use.

kubernetes-validate bundles no schema for PodMonitor and PrometheusRule; these hand-written
JSON schemas hold the fields of the operator's CRDs that modelwatch uses and their close
neighbours, and refuse unknown fields as the API server's strict field validation does.
"""

from __future__ import annotations

from typing import Any

from tests.deploy._k8s import Doc


def _object(required: tuple[str, ...] = (), **properties: Any) -> Doc:
    """A JSON schema object with exactly these properties (unknown ones refused)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": properties,
        "additionalProperties": False,
    }


def _array(items: Doc) -> Doc:
    return {"type": "array", "items": items}


_TEXT = {"type": "string"}
_FLAG = {"type": "boolean"}
_INT = {"type": "integer"}
_TEXTS = _array(_TEXT)
_TEXT_MAP = {"type": "object", "additionalProperties": _TEXT}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_ACTIONS = ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"]
_ACTIONS += ["lowercase", "uppercase", "keepequal", "dropequal"]
_RELABEL = _object(
    sourceLabels=_array({"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}),
    separator=_TEXT,
    targetLabel=_TEXT,
    regex=_TEXT,
    modulus=_INT,
    replacement=_TEXT,
    action={"enum": _ACTIONS + [a.capitalize() for a in _ACTIONS] + ["HashMod"]},
)
_ENDPOINT = _object(
    port={"type": "string", "minLength": 1},
    portNumber={"type": "integer", "minimum": 1},
    path=_TEXT,
    scheme={"enum": ["http", "https"]},
    params={"type": "object"},
    interval=_DURATION,
    scrapeTimeout=_DURATION,
    honorLabels=_FLAG,
    honorTimestamps=_FLAG,
    relabelings=_array(_RELABEL),
    metricRelabelings=_array(_RELABEL),
)
_RULE = _object(
    ("expr",),
    record=_TEXT,
    alert=_TEXT,
    expr={"type": ["string", "integer"]},
    labels=_TEXT_MAP,
    annotations=_TEXT_MAP,
    keep_firing_for=_DURATION,
    **{"for": _DURATION},
)
_RULE["oneOf"] = [{"required": ["record"]}, {"required": ["alert"]}]
_GROUP = _object(
    ("name",),
    name={"type": "string", "minLength": 1},
    interval=_DURATION,
    query_offset=_DURATION,
    limit=_INT,
    partial_response_strategy=_TEXT,
    labels=_TEXT_MAP,
    rules=_array(_RULE),
)
_METADATA = _object(
    ("name",),
    name={"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
    namespace=_TEXT,
    labels=_TEXT_MAP,
    annotations=_TEXT_MAP,
)


def _operator_kind(kind: str, spec: Doc) -> Doc:
    return _object(
        ("apiVersion", "kind", "metadata", "spec"),
        apiVersion={"const": "monitoring.coreos.com/v1"},
        kind={"const": kind},
        metadata=_METADATA,
        spec=spec,
    )


CRD_SCHEMAS: dict[str, Doc] = {
    # The fields of the operator's v1 CRDs that modelwatch uses, and their close neighbours.
    # Unknown fields are refused, as the API server's strict field validation does.
    "PodMonitor": _operator_kind(
        "PodMonitor",
        _object(
            ("selector",),
            selector=_object(matchLabels=_TEXT_MAP, matchExpressions=_array({"type": "object"})),
            namespaceSelector=_object(any=_FLAG, matchNames=_TEXTS),
            jobLabel=_TEXT,
            podTargetLabels=_TEXTS,
            sampleLimit={"type": "integer", "minimum": 0},
            podMetricsEndpoints=_array(_ENDPOINT),
        ),
    ),
    "PrometheusRule": _operator_kind("PrometheusRule", _object(groups=_array(_GROUP))),
}
