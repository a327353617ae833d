"""The OpenAPI 3.1 description of the ingest API, served at ``GET /openapi.json``.

Written by hand (no framework generates it) so that it says exactly what ``sidecar.ingest``
does, limits included; a test checks that it lists every route the app serves. The prose
version is ``docs/wire-format.md``; keep the three in step.
"""

from __future__ import annotations

from typing import Any

from sidecar._field_rules import MAX_LATENCY_SECONDS
from sidecar.columns import STATUSES
from sidecar.counters import EVENT_REJECT_REASONS, REQUEST_REJECT_REASONS
from sidecar.events import IngestLimits

_ERROR_REASONS = (
    *REQUEST_REJECT_REASONS,
    "not_found",
    "method_not_allowed",
    "not_ready",
    "internal_error",
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, **_json_content(_ref("Error"))}


def _schemas(limits: IngestLimits) -> dict[str, Any]:
    number = {"type": "number"}
    return {
        "Event": {
            "type": "object",
            "description": "One prediction. Unknown keys are ignored.",
            "required": ["id", "timestamp", "latency_seconds", "features", "prediction"],
            "properties": {
                "id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": limits.max_id_length,
                    "description": "Unique within the request; the idempotency key end to end.",
                },
                "timestamp": {
                    "oneOf": [{"type": "string", "format": "date-time"}, number],
                    "description": "RFC 3339 with an offset (Z or ±hh:mm), or epoch seconds.",
                },
                "latency_seconds": {"type": "number", "minimum": 0, "maximum": MAX_LATENCY_SECONDS},
                "status": {"enum": [*STATUSES, None], "default": "ok"},
                "features": {
                    "type": "object",
                    "description": (
                        "Feature name to value. Numeric features take numbers, categorical ones "
                        "strings, booleans or integers; null or absent counts as missing."
                    ),
                },
                "prediction": {
                    "description": "The model output (null when none), typed like a feature.",
                },
                "scores": {
                    "type": ["object", "null"],
                    "additionalProperties": number,
                },
                "trace_id": {"type": ["string", "null"]},
                "attributes": {"type": ["object", "null"]},
            },
        },
        "EventsRequest": {
            "type": "object",
            "required": ["model", "version", "events"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string"},
                "events": {
                    "type": "array",
                    "maxItems": limits.max_events,
                    "items": _ref("Event"),
                },
            },
        },
        "Rejection": {
            "type": "object",
            "required": ["index", "field", "reason", "error"],
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                "field": {"type": "string", "examples": ["events[3].latency_seconds"]},
                "reason": {"enum": list(EVENT_REJECT_REASONS)},
                "error": {"type": "string", "description": "'<field>: <message>'"},
            },
        },
        "Warning": {
            "type": "object",
            "required": ["index", "field", "warning"],
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                "field": {"type": "string", "examples": ["events[0].features.age"]},
                "warning": {"type": "string"},
            },
        },
        "EventsAnswer": {
            "type": "object",
            "required": ["accepted", "rejected", "warnings", "warnings_dropped"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "rejected": {"type": "array", "items": _ref("Rejection")},
                "warnings": {
                    "type": "array",
                    "maxItems": limits.max_warnings,
                    "items": _ref("Warning"),
                },
                "warnings_dropped": {"type": "integer", "minimum": 0},
            },
        },
        "FeedbackRequest": {
            "type": "object",
            "required": ["model", "version", "labels"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string"},
                "labels": {
                    "type": "array",
                    "maxItems": limits.max_events,
                    "items": {
                        "type": "object",
                        "required": ["id", "label"],
                        "properties": {
                            "id": {"type": "string", "minLength": 1},
                            "label": {"type": ["number", "string", "boolean"]},
                        },
                    },
                },
            },
        },
        "FeedbackAnswer": {
            "type": "object",
            "required": ["joined", "unmatched", "rejected"],
            "properties": {
                "joined": {"type": "integer", "minimum": 0},
                "unmatched": {"type": "integer", "minimum": 0},
                "rejected": {"type": "array", "items": _ref("Rejection")},
            },
        },
        "FeatureDrift": {
            "type": "object",
            "properties": {
                "feature": {"type": "string"},
                "kind": {"enum": ["numeric", "categorical"]},
                "window_values": {"type": "integer"},
                "psi": {"type": ["number", "null"]},
                "test": {"enum": ["ks", "chi2"]},
                "statistic": {"type": ["number", "null"]},
                "pvalue": {"type": ["number", "null"]},
                "pvalue_adjusted": {"type": ["number", "null"]},
                "drifted": {"type": "boolean"},
                "error_bound": {"type": ["number", "null"]},
                "psi_edges": {
                    "type": "array",
                    "items": number,
                    "description": "Numeric only: inner PSI bin edges of the reference.",
                },
                "categories": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Categorical only: the profile's categories (plus __other__).",
                },
            },
        },
        "DriftSnapshot": {
            "type": "object",
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string"},
                "computed_at": {
                    "type": "number",
                    "description": "When the statistics were computed, in Unix epoch seconds.",
                },
                "window_seconds": number,
                "window_events": {"type": "integer"},
                "correction": {"enum": ["benjamini-hochberg", "bonferroni"]},
                "alpha": number,
                "features": {"type": "array", "items": _ref("FeatureDrift")},
                "prediction": {"oneOf": [_ref("FeatureDrift"), {"type": "null"}]},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "reason", "field", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "reason": {"enum": list(_ERROR_REASONS)},
                        "field": {"type": "string"},
                        "message": {"type": "string"},
                    },
                }
            },
        },
    }


def _post(summary: str, request: str, answer: str, limits: IngestLimits) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{}, {"bearer": []}],
        "requestBody": {"required": True, **_json_content(_ref(request))},
        "responses": {
            "202": {
                "description": "Processed; invalid items are listed",
                **_json_content(_ref(answer)),
            },
            "400": _error_response("invalid_json or invalid_body"),
            "401": _error_response("unauthorized: missing or wrong bearer token"),
            "404": _error_response("unknown_model: the model or version is not served"),
            "405": _error_response("method_not_allowed"),
            "408": _error_response("timeout: the body did not arrive in time"),
            "413": _error_response(
                f"too_large (over {limits.max_body_bytes} bytes) or too_many_events "
                f"(over {limits.max_events} items)"
            ),
            "415": _error_response("unsupported_media_type: Content-Type must be application/json"),
        },
    }


def openapi_document(limits: IngestLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the ingest API under ``limits``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelwatch sidecar ingest API",
            "version": "1",
            "description": (
                "Prediction events and feedback labels in, drift snapshots out. Client input "
                "never produces a 5xx; see docs/wire-format.md."
            ),
        },
        "paths": {
            "/v1/events": {
                "post": _post(
                    "Ingest a batch of prediction events", "EventsRequest", "EventsAnswer", limits
                )
            },
            "/v1/feedback": {
                "post": _post(
                    "Join ground-truth labels to predictions",
                    "FeedbackRequest",
                    "FeedbackAnswer",
                    limits,
                )
            },
            "/v1/drift": {
                "get": {
                    "summary": "Drift statistics of every (or the selected) model version",
                    "security": [{}, {"bearer": []}],
                    "parameters": [
                        {
                            "name": "model",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "One snapshot per selected model version",
                            **_json_content(
                                {
                                    "type": "object",
                                    "required": ["models"],
                                    "properties": {
                                        "models": {"type": "array", "items": _ref("DriftSnapshot")}
                                    },
                                }
                            ),
                        },
                        "401": _error_response("unauthorized"),
                        "404": _error_response("unknown_model: no served model matches the filter"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process is serving",
                    "responses": {
                        "200": {
                            "description": "Alive",
                            **_json_content(
                                {"type": "object", "properties": {"status": {"const": "ok"}}}
                            ),
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: at least one model profile is loaded",
                    "responses": {
                        "200": {
                            "description": "Ready; lists the served models and versions",
                            **_json_content(
                                {
                                    "type": "object",
                                    "properties": {
                                        "status": {"const": "ready"},
                                        "models": {
                                            "type": "object",
                                            "additionalProperties": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            },
                                        },
                                    },
                                }
                            ),
                        },
                        "503": _error_response(
                            "not_ready: no profile is loaded (a fault of the sidecar's setup, "
                            "never of a request)"
                        ),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1 JSON"}},
                }
            },
        },
        "components": {
            "schemas": _schemas(limits),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on /v1/* when the sidecar is started with a token.",
                }
            },
        },
    }
