"""Names of decoded JSON values' types, for error messages that say what arrived instead."""

from __future__ import annotations


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type: ``null``, ``boolean``, ``number`` and so on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
