"""Queries, sorting and hit totals of the test Elasticsearch server's search and count APIs.

Implements, from the Elasticsearch reference: "Match all query" (and ``match_none``), "IDs query",
"Term query" and "Terms query" (keyword values compared exactly; numeric and boolean fields by
value; ``text`` fields against lowercase word tokens, since term queries are not analysed; an
unmapped field matches nothing), "Exists query", "Boolean query" (``must``, ``filter``,
``must_not``, ``should`` with ``minimum_should_match``), "Sort search results" (field sorts, missing
values last, dates sorted and returned as epoch milliseconds) and ``track_total_hits``. Any other
query is a 400 ``parsing_exception``, as an unknown query is on a real node.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from tests.support._es_errors import api_error
from tests.support._es_mappings import IndexMapping, is_strict_date

_TRACK_TOTAL_HITS_DEFAULT = 10_000


class SearchTarget(Protocol):
    """What a search needs of a concrete index."""

    name: str
    mapping: IndexMapping

    def searchable(self) -> dict[str, dict[str, Any]]:
        """The refreshed documents: id → source."""
        ...


Hit = tuple[SearchTarget, str, dict[str, Any]]
"""A matching document: the index it is in, its id and its source."""


Matcher = Callable[[str, Mapping[str, Any]], bool]


def matching_hits(indices: Sequence[SearchTarget], query: Mapping[str, Any]) -> Iterator[Hit]:
    for index in indices:
        matches = _compile(query, index)
        for doc_id, source in index.searchable().items():
            if matches(doc_id, source):
                yield index, doc_id, source


def _compile(query: Mapping[str, Any], index: SearchTarget) -> Matcher:
    if not isinstance(query, Mapping) or len(query) != 1:
        raise api_error(
            400, "parsing_exception", "[_na] query malformed, must start with start_object"
        )
    ((kind, spec),) = query.items()
    if kind == "match_all":
        return lambda _id, _source: True
    if kind == "match_none":
        return lambda _id, _source: False
    if kind == "ids":
        wanted = {str(v) for v in spec.get("values", [])}
        return lambda doc_id, _source: doc_id in wanted
    if kind == "exists":
        path = spec["field"]
        return lambda _id, source: any(v is not None for v in _values(source, path))
    if kind in ("term", "terms"):
        return _term_matcher(kind, spec, index)
    if kind == "bool":
        return _bool_matcher(spec, index)
    raise api_error(400, "parsing_exception", f"unknown query [{kind}]")


def _term_matcher(kind: str, spec: Mapping[str, Any], index: SearchTarget) -> Matcher:
    fields = [k for k in spec if k != "boost"]
    if len(fields) != 1:
        raise api_error(
            400, "parsing_exception", f"[{kind}] query does not support multiple fields"
        )
    (path,) = fields
    raw = spec[path]
    if kind == "term":
        wanted = [raw.get("value") if isinstance(raw, Mapping) else raw]
    elif isinstance(raw, list):
        wanted = raw
    else:
        raise api_error(400, "parsing_exception", "[terms] query does not support lookups here")
    mapping = index.mapping.field(path)
    if mapping is None or mapping.is_object:
        return lambda _id, _source: False
    normalise = _term_form(mapping.type)
    targets = {normalise(w) for w in wanted}

    def matches(_id: str, source: Mapping[str, Any]) -> bool:
        for value in _values(source, path):
            forms = (
                _text_tokens(value)
                if mapping.type in ("text", "match_only_text")
                else [normalise(value)]
            )
            if any(f in targets for f in forms):
                return True
        return False

    return matches


def _bool_matcher(spec: Mapping[str, Any], index: SearchTarget) -> Matcher:
    def clauses(key: str) -> list[Matcher]:
        value = spec.get(key, [])
        return [_compile(q, index) for q in (value if isinstance(value, list) else [value])]

    required = clauses("must") + clauses("filter")
    excluded = clauses("must_not")
    optional = clauses("should")
    minimum = int(spec.get("minimum_should_match", 0 if required else 1 if optional else 0))

    def matches(doc_id: str, source: Mapping[str, Any]) -> bool:
        return (
            all(m(doc_id, source) for m in required)
            and not any(m(doc_id, source) for m in excluded)
            and sum(m(doc_id, source) for m in optional) >= minimum
        )

    return matches


def _values(source: Any, path: str) -> Iterator[Any]:
    """Values at a dotted path, through nested objects, dotted keys and arrays."""
    if not path:
        if isinstance(source, list):
            for element in source:
                yield from _values(element, "")
        else:
            yield source
        return
    if isinstance(source, list):
        for element in source:
            yield from _values(element, path)
        return
    if not isinstance(source, Mapping):
        return
    for key, value in source.items():
        if path == key:
            yield from _values(value, "")
        elif path.startswith(key + "."):
            yield from _values(value, path[len(key) + 1 :])


def _term_form(kind: str) -> Callable[[Any], Any]:
    if kind in ("long", "integer", "short", "byte", "unsigned_long", "double", "float"):
        return _as_number
    if kind == "boolean":
        return lambda v: str(v).lower() if isinstance(v, bool) else str(v)
    return _keyword


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _keyword(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _text_tokens(value: Any) -> list[str]:
    return [t for t in re.split(r"\W+", _keyword(value).lower()) if t]


def sort_spec(raw: Any) -> list[tuple[str, bool]]:
    if raw is None:
        return []
    entries = raw if isinstance(raw, list) else [raw]
    spec = []
    for entry in entries:
        if isinstance(entry, str):
            spec.append((entry, entry == "_score"))
            continue
        ((name, order),) = entry.items()
        direction = order.get("order", "asc") if isinstance(order, Mapping) else order
        spec.append((name, direction == "desc"))
    return spec


def sort_value(index: SearchTarget, source: Mapping[str, Any], name: str) -> Any:
    if name in ("_doc", "_score"):
        return 0
    mapping = index.mapping.field(name)
    value = next(iter(_values(source, name)), None)
    if value is None or mapping is None:
        return None
    if mapping.type in ("date", "date_nanos"):
        return _epoch_millis(value)
    if mapping.type in ("long", "integer", "short", "byte", "double", "float", "half_float"):
        return _as_number(value)
    return _keyword(value)


def sort_comparator(
    spec: list[tuple[str, bool]],
) -> Callable[[Hit, Hit], int]:
    def compare(a: Hit, b: Hit) -> int:
        for name, descending in spec:
            left, right = sort_value(a[0], a[2], name), sort_value(b[0], b[2], name)
            if left == right:
                continue
            # Missing values sort last in either direction, as with the default `missing: _last`.
            if left is None:
                return 1
            if right is None:
                return -1
            less = left < right
            return (1 if less else -1) if descending else (-1 if less else 1)
        return 0

    return compare


def total_hits(count: int, track: Any) -> dict[str, Any] | None:
    if track is False:
        return None
    limit = _TRACK_TOTAL_HITS_DEFAULT if track is True else int(track)
    if track is True and count <= limit:
        return {"value": count, "relation": "eq"}
    return {"value": min(count, limit), "relation": "eq" if count <= limit else "gte"}


def _epoch_millis(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = str(value)
    if re.fullmatch(r"-?\d+", text) and not is_strict_date(text):
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace(",", "."))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
