"""Request-level checks shared by ``/v1/events`` and ``/v1/feedback``: size, JSON, envelope.

Everything here either returns the request's parts or raises ``RequestRejected`` for the
whole request; nothing looks inside the individual events or labels.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidecar._ingest_types import Catalogue, IngestLimits, ProfileLookup, RequestRejected
from sidecar._json import json_type
from sidecar.profile import Profile


def decode(body: bytes, limits: IngestLimits) -> object:
    """The decoded JSON of ``body``; ``RequestRejected`` when too large or not JSON."""
    if len(body) > limits.max_body_bytes:
        raise RequestRejected(
            413,
            "too_large",
            "body",
            f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes} bytes",
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(400, "invalid_json", "body", _json_error(exc)) from exc


def _json_error(exc: orjson.JSONDecodeError) -> str:
    # orjson's own wording for NaN/Infinity is "unexpected character"; say what is really wrong.
    doc = exc.doc if isinstance(exc.doc, str) else ""
    if doc[exc.pos : exc.pos + 8].startswith(("NaN", "Infinity")):
        return (
            f"not valid JSON at char {exc.pos}: NaN and Infinity are not JSON numbers; "
            "send null for a missing value"
        )
    return f"not valid JSON: {exc.msg} (char {exc.pos})"


def envelope(
    obj: object, items_key: str, lookup: ProfileLookup, catalogue: Catalogue | None
) -> tuple[str, str, Profile, list[Any]]:
    """``(model, version, profile, items)`` of a decoded body; items sit under ``items_key``."""
    if not isinstance(obj, dict):
        raise RequestRejected(
            400, "invalid_body", "body", f"must be a JSON object, got {json_type(obj)}"
        )
    for key in ("model", "version"):
        if key not in obj:
            raise RequestRejected(400, "invalid_body", key, "is required")
        if not isinstance(obj[key], str):
            raise RequestRejected(
                400, "invalid_body", key, f"must be a string, got {json_type(obj[key])}"
            )
    if items_key not in obj:
        raise RequestRejected(400, "invalid_body", items_key, "is required")
    items = obj[items_key]
    if not isinstance(items, list):
        raise RequestRejected(
            400, "invalid_body", items_key, f"must be an array, got {json_type(items)}"
        )
    model, version = obj["model"], obj["version"]
    profile = lookup(model, version)
    if profile is None:
        raise _unknown_model(model, version, catalogue)
    return model, version, profile, items


def _unknown_model(model: str, version: str, catalogue: Catalogue | None) -> RequestRejected:
    known = dict(catalogue()) if catalogue is not None else {}
    if model in known:
        versions = ", ".join(repr(v) for v in sorted(known[model])) or "none"
        return RequestRejected(
            404,
            "unknown_model",
            "version",
            f"model {model!r} has no version {version!r}; known versions: {versions}",
        )
    models = ", ".join(repr(m) for m in sorted(known)) or "none"
    return RequestRejected(
        404, "unknown_model", "model", f"unknown model {model!r}; known models: {models}"
    )


def check_count(items: list[Any], items_key: str, limits: IngestLimits) -> None:
    """``RequestRejected`` (413) when ``items`` holds more than ``limits.max_events``."""
    if len(items) > limits.max_events:
        raise RequestRejected(
            413,
            "too_many_events",
            items_key,
            f"holds {len(items)} items; at most {limits.max_events} are accepted per request",
        )
