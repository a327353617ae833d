"""JSON for the prediction logger: one event to bytes, a batch to a request body, answers back.

``orjson`` is used when it is importable, the standard library's ``json`` otherwise; both give
the same JSON value for the same event. Non-finite floats become ``null`` in both, so a NaN
latency reaches the sidecar as an invalid event (rejected per item) instead of making the whole
body invalid JSON. This module must stay importable with the standard library alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

try:
    import orjson
except ModuleNotFoundError:  # pragma: no cover - the fallback is tested through encode_json
    orjson = None  # type: ignore[assignment]

_loads: Callable[[bytes], object] = json.loads if orjson is None else orjson.loads
_ORJSON_OPTIONS = 0 if orjson is None else orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

EncodeError = (TypeError, ValueError, OverflowError, RecursionError)
"""What encoding an event may raise: the event holds a value JSON cannot carry."""


def _default(value: object) -> object:
    """Values JSON has no type for but that carry one: mappings, sets, numpy-like scalars/arrays."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return list(value)
    for method in ("tolist", "item"):  # numpy, torch, jax … scalars and arrays
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (what orjson writes for them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode_json(event: Mapping[str, object]) -> bytes:
    """``event`` as compact JSON with the standard library (the fallback when orjson is absent)."""
    options: dict[str, Any] = {"separators": (",", ":"), "allow_nan": False, "default": _default}
    try:
        return json.dumps(event, **options).encode()
    except ValueError:
        # Only non-finite floats make allow_nan refuse; rewrite them and encode again. Values
        # that ``_default`` converts are converted first, so their NaNs are caught as well.
        plain = json.loads(json.dumps(event, default=_default))
        return json.dumps(_finite(plain), **options).encode()


def _encode_orjson(event: Mapping[str, object]) -> bytes:
    # Passing ``default`` and ``option`` makes every call about 150 ns slower (a third of the
    # encoding), so the plain call comes first. It raises TypeError exactly when the event holds
    # a value only the options or ``_default`` can write (numpy, a non-str key, a Mapping that
    # is not a dict …); when it succeeds, the options would not have changed a byte.
    try:
        data = orjson.dumps(event)
    except TypeError:
        data = orjson.dumps(event, default=_default, option=_ORJSON_OPTIONS)
    return b"".join((data, b""))  # an exact-size copy; see ``dumps``


encode_event: Callable[[Mapping[str, object]], bytes] = (
    encode_json if orjson is None else _encode_orjson
)
"""One event to compact JSON bytes; raises one of ``EncodeError`` for a value JSON cannot hold."""

dumps: Callable[[Mapping[str, object]], bytes] = encode_json if orjson is None else orjson.dumps
"""``encode_event`` for events of plain JSON types, without its copy; the same bytes.

It skips a Python call per event. It raises one of ``EncodeError`` for every other event,
including ones ``encode_event`` can write (numpy values, non-str keys, mappings that are not
dicts); callers then use ``encode_event``. What it returns is to be copied before it is kept:
orjson returns its result in the larger block it wrote into, so a 335-byte event held until
its batch is sent would hold 4 KiB (41 MB for a full buffer of 10 000 events). The copy,
``b"".join((data, b""))`` (the cheapest way to copy bytes), costs 0.05–0.08 µs and gives the
block back at once.
"""


def envelope(model: str, version: str) -> tuple[bytes, bytes]:
    """The bytes before and after the comma-joined events of a ``POST /v1/events`` body."""
    head = json.dumps({"model": model, "version": version}, separators=(",", ":"))
    return head[:-1].encode() + b',"events":[', b"]}"


def decode(body: bytes) -> object:
    """The JSON value of an answer body, or None when it is not JSON."""
    try:
        return _loads(body)
    except ValueError:  # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
