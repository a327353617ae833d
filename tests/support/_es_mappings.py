"""Field mappings of the test Elasticsearch server: which documents a real cluster would reject.

Implements the parts of these Elasticsearch reference pages that decide whether a document is
accepted, and nothing else (no analysis, no doc values):

- "Mapping" / "Explicit mapping": ``properties`` (nested ``properties`` make objects), ``dynamic``
  (``true``, ``false``, ``strict``, ``runtime``) on the root and on objects, ``enabled: false``.
- "Field data types": ``long``/``integer``/``short``/``byte``/``unsigned_long``, ``double``/
  ``float``/``half_float``/``scaled_float``, ``keyword``/``constant_keyword``/``wildcard``/``text``/
  ``match_only_text``, ``date``/``date_nanos`` (default format ``strict_date_optional_time||
  epoch_millis``), ``boolean``, ``ip``, ``flattened``, ``object``/``nested``. Unknown types accept
  anything.
- "coerce" (numeric strings accepted by numeric fields unless ``coerce: false``) and
  "ignore_malformed" (a malformed value drops the field, not the document).
- "Dynamic field mapping": JSON type → field type (``long``, ``float``, ``boolean``, ``object``,
  ``text`` with a ``keyword`` multi-field), ``date_detection`` and ``numeric_detection``.
- "Dynamic templates": ``match_mapping_type``/``unmatch_mapping_type``, ``match``/``unmatch``
  (with ``match_pattern: regex``), ``path_match``/``path_unmatch`` (strings or lists), and the
  ``{dynamic_type}`` placeholder; the first matching template wins.
- "Mapping limit settings": ``index.mapping.total_fields.limit`` (default 1000; multi-fields count).

A rejected document raises :class:`DocumentRejectedError` carrying the error object a bulk item
would carry (``document_parsing_exception`` or ``strict_dynamic_mapping_exception``, with
``caused_by``).
Reasons follow the real messages but omit the ``[line:col]`` parser position a real node prefixes.
A document's new dynamic fields are added only when the whole document is accepted.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

_INTEGER_RANGES = {
    "long": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-(2**7), 2**7 - 1),
    "unsigned_long": (0, 2**64 - 1),
}
_FLOAT_TYPES = frozenset({"double", "float", "half_float", "scaled_float"})
_STRING_TYPES = frozenset({"keyword", "constant_keyword", "wildcard", "text", "match_only_text"})
_DATE_TYPES = frozenset({"date", "date_nanos"})
_OBJECT_TYPES = frozenset({"object", "nested"})
_DATE_FORMAT = "strict_date_optional_time||epoch_millis"
_STRICT_DATE = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?)?)?"
)
DEFAULT_TOTAL_FIELDS_LIMIT = 1000


class DocumentRejectedError(Exception):
    """A document the mapping refuses; ``error`` is the bulk item's ``error`` object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["reason"])
        self.error = error


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One mapped field (or object) and the parameters that affect acceptance."""

    type: str
    coerce: bool = True
    ignore_malformed: bool = False
    dynamic: str | None = None
    enabled: bool = True
    multi_fields: int = 0

    @property
    def is_object(self) -> bool:
        """True for ``object``/``nested`` mappings, whose values must be JSON objects."""
        return self.type in _OBJECT_TYPES


@dataclass(frozen=True, slots=True)
class _DynamicTemplate:
    name: str
    mapping: dict[str, Any]
    match_mapping_type: tuple[str, ...] = ()
    unmatch_mapping_type: tuple[str, ...] = ()
    match: tuple[str, ...] = ()
    unmatch: tuple[str, ...] = ()
    path_match: tuple[str, ...] = ()
    path_unmatch: tuple[str, ...] = ()
    regex: bool = False

    def applies(self, path: str, detected: str) -> bool:
        leaf = path.rsplit(".", 1)[-1]
        if self.match_mapping_type and not (
            "*" in self.match_mapping_type or detected in self.match_mapping_type
        ):
            return False
        if detected in self.unmatch_mapping_type:
            return False
        if self.match and not any(self._matches(p, leaf) for p in self.match):
            return False
        if any(self._matches(p, leaf) for p in self.unmatch):
            return False
        if self.path_match and not any(_glob(p, path) for p in self.path_match):
            return False
        return not any(_glob(p, path) for p in self.path_unmatch)

    def _matches(self, pattern: str, name: str) -> bool:
        return re.fullmatch(pattern, name) is not None if self.regex else _glob(pattern, name)


@dataclass(slots=True)
class IndexMapping:
    """The mapping of one concrete index; grows as dynamic fields are accepted."""

    fields: dict[str, FieldMapping] = field(default_factory=dict)
    dynamic_templates: list[_DynamicTemplate] = field(default_factory=list)
    dynamic: str = "true"
    date_detection: bool = True
    numeric_detection: bool = False
    total_fields_limit: int = DEFAULT_TOTAL_FIELDS_LIMIT

    @classmethod
    def from_definition(
        cls, mappings: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> IndexMapping:
        """Builds the mapping from a (merged) ``mappings`` object and flat index settings."""
        mapping = cls(
            dynamic=str(mappings.get("dynamic", "true")).lower(),
            date_detection=bool(mappings.get("date_detection", True)),
            numeric_detection=bool(mappings.get("numeric_detection", False)),
            total_fields_limit=int(
                settings.get("index.mapping.total_fields.limit", DEFAULT_TOTAL_FIELDS_LIMIT)
            ),
        )
        for entry in mappings.get("dynamic_templates", []):
            ((name, body),) = entry.items()
            mapping.dynamic_templates.append(_dynamic_template(name, body))
        _add_properties(mapping.fields, "", mappings.get("properties", {}))
        return mapping

    def field(self, path: str) -> FieldMapping | None:
        """The mapping of the dotted ``path``, or None when it is not mapped."""
        return self.fields.get(path)

    def check(self, source: Mapping[str, Any], doc_id: str) -> dict[str, FieldMapping]:
        """The dynamic fields ``source`` would add; raises ``DocumentRejectedError`` instead."""
        walk = _Walk(self, doc_id)
        walk.object(source, "", self.dynamic)
        if walk.added:
            total = _count(self.fields.values()) + _count(walk.added.values())
            if total > self.total_fields_limit:
                raise DocumentRejectedError(
                    _parse_error(
                        f"failed to parse: Limit of total fields [{self.total_fields_limit}] "
                        f"has been exceeded while adding new fields [{len(walk.added)}]",
                        "illegal_argument_exception",
                        f"Limit of total fields [{self.total_fields_limit}] has been exceeded "
                        f"while adding new fields [{len(walk.added)}]",
                    )
                )
        return walk.added

    def add(self, new_fields: Mapping[str, FieldMapping]) -> None:
        """Records the dynamic fields of an accepted document."""
        self.fields.update(new_fields)


def merge_mappings(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Composes ``mappings`` in order: later properties win, same-named templates replace."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = _merge_properties(merged.get("properties", {}), value)
            elif key == "dynamic_templates":
                merged["dynamic_templates"] = _merge_templates(
                    merged.get("dynamic_templates", []), value
                )
            else:
                merged[key] = value
    return merged


def is_strict_date(value: str) -> bool:
    """True when ``value`` parses with ``strict_date_optional_time``."""
    if _STRICT_DATE.fullmatch(value) is None:
        return False
    text = value.replace(",", ".")
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _merge_properties(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for name, definition in new.items():
        previous = merged.get(name)
        if (
            isinstance(previous, Mapping)
            and "properties" in previous
            and "properties" in definition
        ):
            combined = {**previous, **definition}
            combined["properties"] = _merge_properties(
                previous["properties"], definition["properties"]
            )
            merged[name] = combined
        else:
            merged[name] = definition
    return merged


def _merge_templates(old: list[Any], new: list[Any]) -> list[Any]:
    merged = list(old)
    for entry in new:
        (name,) = entry.keys()
        for i, existing in enumerate(merged):
            if name in existing:
                merged[i] = entry
                break
        else:
            merged.append(entry)
    return merged


def _dynamic_template(name: str, body: Mapping[str, Any]) -> _DynamicTemplate:
    def strings(key: str) -> tuple[str, ...]:
        value = body.get(key, ())
        return (value,) if isinstance(value, str) else tuple(value)

    return _DynamicTemplate(
        name=name,
        mapping=dict(body.get("mapping", {})),
        match_mapping_type=strings("match_mapping_type"),
        unmatch_mapping_type=strings("unmatch_mapping_type"),
        match=strings("match"),
        unmatch=strings("unmatch"),
        path_match=strings("path_match"),
        path_unmatch=strings("path_unmatch"),
        regex=body.get("match_pattern") == "regex",
    )


def _add_properties(fields: dict[str, FieldMapping], prefix: str, props: Mapping[str, Any]) -> None:
    for name, definition in props.items():
        path = f"{prefix}{name}"
        fields[path] = _field_mapping(definition)
        if "properties" in definition:
            _add_properties(fields, f"{path}.", definition["properties"])


def _field_mapping(definition: Mapping[str, Any]) -> FieldMapping:
    kind = definition.get("type", "object" if "properties" in definition or not definition else "")
    dynamic = definition.get("dynamic")
    return FieldMapping(
        type=kind or "object",
        coerce=bool(definition.get("coerce", True)),
        ignore_malformed=bool(definition.get("ignore_malformed", False)),
        dynamic=None if dynamic is None else str(dynamic).lower(),
        enabled=bool(definition.get("enabled", True)),
        multi_fields=len(definition.get("fields", {})),
    )


def _count(fields: Iterable[FieldMapping]) -> int:
    return sum(1 + f.multi_fields for f in fields)


def _glob(pattern: str, text: str) -> bool:
    # Elasticsearch's simple match: only '*' is special, so '?' and '[' must match literally.
    return fnmatch.fnmatchcase(text, pattern.replace("[", "[[]").replace("?", "[?]"))


def _parse_error(reason: str, cause_type: str, cause_reason: str) -> dict[str, Any]:
    return {
        "type": "document_parsing_exception",
        "reason": reason,
        "caused_by": {"type": cause_type, "reason": cause_reason},
    }


def _preview(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_preview(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Walk:
    """One pass over a document, collecting the dynamic fields it introduces."""

    def __init__(self, mapping: IndexMapping, doc_id: str) -> None:
        self.mapping = mapping
        self.doc_id = doc_id
        self.added: dict[str, FieldMapping] = {}

    def lookup(self, path: str) -> FieldMapping | None:
        return self.added.get(path) or self.mapping.fields.get(path)

    def object(self, source: Mapping[str, Any], prefix: str, dynamic: str) -> None:
        for key, value in source.items():
            if not key or any(not part for part in key.split(".")):
                raise DocumentRejectedError(
                    _parse_error(
                        "failed to parse",
                        "illegal_argument_exception",
                        f"field name cannot contain only whitespace or be empty: ['{key}']",
                    )
                )
            *parents, leaf = key.split(".")
            path, inner = prefix, dynamic
            for part in parents:
                path = f"{path}{part}"
                resolved = self.intermediate(path, inner)
                if resolved is None:
                    break
                path, inner = f"{path}.", resolved
            else:
                self.value(f"{path}{leaf}", value, inner)

    def intermediate(self, path: str, dynamic: str) -> str | None:
        """The ``dynamic`` setting inside object ``path``, or None when its contents are ignored."""
        existing = self.lookup(path)
        if existing is None:
            if not self.may_add(path, dynamic):
                return None
            self.added[path] = FieldMapping("object")
            return dynamic
        if existing.is_object:
            return (existing.dynamic or dynamic) if existing.enabled else None
        if existing.type == "flattened":
            return None
        parent = path.rsplit(".", 1)[0]
        raise DocumentRejectedError(
            _parse_error(
                "failed to parse",
                "illegal_argument_exception",
                f"Could not dynamically add mapping for field [{path}]. Existing mapping for "
                f"[{parent}] must be of type object but found [{existing.type}].",
            )
        )

    def may_add(self, path: str, dynamic: str) -> bool:
        if dynamic == "strict":
            parent, _, leaf = path.rpartition(".")
            raise DocumentRejectedError(
                {
                    "type": "strict_dynamic_mapping_exception",
                    "reason": f"mapping set to strict, dynamic introduction of [{leaf}] within "
                    f"[{parent or '_doc'}] is not allowed",
                }
            )
        return dynamic != "false"

    def value(self, path: str, value: Any, dynamic: str) -> None:
        if value is None:
            return
        if isinstance(value, list):
            for element in value:
                self.value(path, element, dynamic)
            return
        existing = self.lookup(path)
        if existing is None:
            if not self.may_add(path, dynamic):
                return
            existing = self.dynamic_field(path, value)
            self.added[path] = existing
        if isinstance(value, dict):
            if existing.is_object:
                if existing.enabled:
                    self.object(value, f"{path}.", existing.dynamic or dynamic)
                return
            if existing.type == "flattened" or existing.type not in _KNOWN_CONCRETE:
                return
            self.reject(path, existing, value, "illegal_argument_exception", "expected a value")
        if existing.is_object:
            if not existing.enabled:
                return
            leaf = path.rsplit(".", 1)[-1]
            raise DocumentRejectedError(
                {
                    "type": "document_parsing_exception",
                    "reason": f"object mapping for [{path}] tried to parse field [{leaf}] as "
                    "object, but found a concrete value",
                }
            )
        problem = _value_problem(existing, value)
        if problem is not None and not existing.ignore_malformed:
            self.reject(path, existing, value, *problem)

    def dynamic_field(self, path: str, value: Any) -> FieldMapping:
        detected = self.detect(value)
        for template in self.mapping.dynamic_templates:
            if template.applies(path, detected):
                definition = dict(template.mapping)
                kind = str(definition.get("type", _DEFAULT_DYNAMIC[detected]))
                definition["type"] = kind.replace("{dynamic_type}", _DYNAMIC_TYPE[detected])
                return _field_mapping(definition)
        if detected == "string":
            return FieldMapping("text", multi_fields=1)
        return FieldMapping(_DEFAULT_DYNAMIC[detected])

    def detect(self, value: Any) -> str:
        """The ``match_mapping_type`` name of a new field's first value."""
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int):
            return "long"
        if isinstance(value, float):
            return "double"
        if isinstance(value, dict):
            return "object"
        if self.mapping.date_detection and is_strict_date(value):
            return "date"
        if self.mapping.numeric_detection and _number(value) is not None:
            return "long" if re.fullmatch(r"[+-]?\d+", value) else "double"
        return "string"

    def reject(
        self, path: str, mapping: FieldMapping, value: Any, cause: str, cause_reason: str
    ) -> NoReturn:
        raise DocumentRejectedError(
            _parse_error(
                f"failed to parse field [{path}] of type [{mapping.type}] in document with id "
                f"'{self.doc_id}'. Preview of field's value: '{_preview(value)}'",
                cause,
                cause_reason,
            )
        )


_DEFAULT_DYNAMIC = {
    "boolean": "boolean",
    "long": "long",
    "double": "float",
    "object": "object",
    "date": "date",
    "string": "text",
}
_DYNAMIC_TYPE = {**_DEFAULT_DYNAMIC, "double": "double"}
_KNOWN_CONCRETE = (
    frozenset(_INTEGER_RANGES) | _FLOAT_TYPES | _STRING_TYPES | _DATE_TYPES | {"boolean", "ip"}
)


def _number(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _value_problem(mapping: FieldMapping, value: Any) -> tuple[str, str] | None:
    """Why ``value`` does not fit ``mapping`` as ``(cause type, cause reason)``, or None."""
    kind = mapping.type
    if kind in _INTEGER_RANGES or kind in _FLOAT_TYPES:
        return _numeric_problem(mapping, value)
    if kind in _DATE_TYPES:
        if isinstance(value, bool) or not (
            isinstance(value, int | float)
            or is_strict_date(value)
            or re.fullmatch(r"-?\d+", value) is not None
        ):
            return (
                "illegal_argument_exception",
                f"failed to parse date field [{_preview(value)}] with format [{_DATE_FORMAT}]",
            )
        return None
    if kind == "boolean":
        if isinstance(value, bool) or (isinstance(value, str) and value in ("true", "false", "")):
            return None
        return (
            "illegal_argument_exception",
            f"Failed to parse value [{_preview(value)}] as only [true] or [false] are allowed.",
        )
    if kind == "ip":
        try:
            ipaddress.ip_address(str(value))
        except ValueError:
            return ("illegal_argument_exception", f"'{value}' is not an IP string literal.")
    return None


def _numeric_problem(mapping: FieldMapping, value: Any) -> tuple[str, str] | None:
    kind = mapping.type
    if isinstance(value, bool):
        token = "VALUE_TRUE" if value else "VALUE_FALSE"
        return (
            "illegal_argument_exception",
            f"Current token ({token}) not numeric, can not use numeric value accessors",
        )
    number: float | int
    if isinstance(value, str):
        if not mapping.coerce:
            return ("illegal_argument_exception", "[coerce] is set to false")
        parsed = _number(value)
        if parsed is None:
            return ("number_format_exception", f'For input string: "{value}"')
        number = parsed
    else:
        number = value
    if kind in _FLOAT_TYPES:
        if not math.isfinite(number) or (kind == "float" and abs(number) > 3.4028234663852886e38):
            return ("illegal_argument_exception", f"[{kind}] supports only finite values")
        return None
    if isinstance(number, float) and not mapping.coerce and not number.is_integer():
        return ("illegal_argument_exception", f"Value [{number}] has a decimal part")
    low, high = _INTEGER_RANGES[kind]
    if not math.isfinite(number) or not low <= int(number) <= high:
        article = "an" if kind[0] in "aeiou" else "a"
        return (
            "illegal_argument_exception",
            f"Value [{_preview(value)}] is out of range for {article} {kind}",
        )
    return None
