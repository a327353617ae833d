"""In-memory cluster state of the test Elasticsearch server and the REST APIs over it.

The HTTP layer (``es_server``) routes requests here; everything here is thread-safe behind one
lock. Behaviour follows these Elasticsearch reference pages (see the module docstring of
``es_server`` for the full list and the deliberate gaps):

- "Create or update index template" / "Get index template" / "Delete index template" and
  "Index templates" (highest ``priority`` wins; templates with overlapping ``index_patterns`` and
  the same priority are refused; ``composed_of`` must name existing component templates unless
  listed in ``ignore_missing_component_templates``; composition merges component templates in
  order, then the template's own ``template``).
- "Create or update component template" / "Get component template" / "Delete component template".
- "Create or update lifecycle policy" / "Get lifecycle policy" / "Delete lifecycle policy".
- "Data streams", "Create data stream", "Get data stream", "Delete data stream": a write to a name
  matching a template with ``data_stream`` creates the stream with backing index
  ``.ds-<stream>-<yyyy.MM.dd>-000001``; streams accept only ``create``; ``@timestamp`` is required
  and mapped as ``date``.
- "Bulk API": NDJSON body terminated by a newline, actions ``create``/``index``/``delete``,
  per-item ``status``/``result``/``error``, top-level ``errors``; 409
  ``version_conflict_engine_exception`` on a duplicate ``create``; auto-created indices.
- "Count API", "Search API" (``size``, ``from``, ``sort``, ``track_total_hits``; the queries are
  in ``_es_query``; ``from + size`` over ``index.max_result_window`` 10 000 is refused),
  "Refresh API" and "Near real-time search": writes become searchable at a refresh — explicit,
  ``refresh`` on the bulk request, or ``index.refresh_interval`` (default 1s) having passed.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support._es_errors import RestError, api_error, index_not_found
from tests.support._es_mappings import DocumentRejectedError, IndexMapping, merge_mappings
from tests.support._es_query import (
    matching_hits,
    sort_comparator,
    sort_spec,
    sort_value,
    total_hits,
)

MAX_RESULT_WINDOW = 10_000
_MAX_ID_BYTES = 512
_BULK_ACTIONS = ("create", "index", "delete", "update")
_ACTION_PARAMS = frozenset(
    {
        "_index",
        "_id",
        "routing",
        "pipeline",
        "require_alias",
        "require_data_stream",
        "dynamic_templates",
        "if_seq_no",
        "if_primary_term",
        "version",
        "version_type",
        "retry_on_conflict",
        "_source",
        "list_executed_pipelines",
    }
)
_ILM_PHASES = frozenset({"hot", "warm", "cold", "frozen", "delete"})
_INVALID_INDEX_CHARS = frozenset('\\/*?"<>| ,#:')
_SHARDS_WRITE = {"total": 2, "successful": 1, "failed": 0}


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One bulk operation as received, shown to the fault hooks before it is applied."""

    op_type: str
    index: str
    id: str | None
    source: Mapping[str, Any] | None


ItemRejection = tuple[int, dict[str, Any]]
"""``(status, error object)`` for a bulk item refused by a fault hook."""
ItemHook = Callable[[BulkItem], ItemRejection | None]


@dataclass(slots=True)
class _Doc:
    source: dict[str, Any]
    version: int
    seq_no: int


@dataclass(slots=True)
class _Index:
    name: str
    mapping: IndexMapping
    settings: dict[str, Any]
    data_stream: str | None
    created: datetime
    uuid: str = field(default_factory=lambda: _random_id(22))
    docs: dict[str, _Doc] = field(default_factory=dict)
    visible: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    next_seq_no: int = 0
    last_refresh: float = field(default_factory=time.monotonic)

    def refresh(self) -> None:
        for doc_id in self.pending:
            doc = self.docs.get(doc_id)
            if doc is None:
                self.visible.pop(doc_id, None)
            else:
                self.visible[doc_id] = doc.source
        self.pending.clear()
        self.last_refresh = time.monotonic()

    def searchable(self) -> dict[str, dict[str, Any]]:
        interval = _seconds(self.settings.get("index.refresh_interval", "1s"))
        if interval is not None and time.monotonic() - self.last_refresh >= interval:
            self.refresh()
        return self.visible


@dataclass(slots=True)
class _DataStream:
    name: str
    template: str
    indices: list[_Index]
    policy: str | None

    @property
    def write_index(self) -> _Index:
        return self.indices[-1]


@dataclass(frozen=True, slots=True)
class _Operation:
    op_type: str
    index: str
    id: str | None
    source: bytes | None


class Cluster:
    """Templates, lifecycle policies, data streams and indices of one single-node cluster."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, builtin_templates: bool = True
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._component_templates: dict[str, dict[str, Any]] = {}
        self._index_templates: dict[str, dict[str, Any]] = {}
        self._policies: dict[str, dict[str, Any]] = {}
        self._data_streams: dict[str, _DataStream] = {}
        self._indices: dict[str, _Index] = {}
        if builtin_templates:
            self._install_builtins()

    # -- templates -------------------------------------------------------------------------------

    def put_index_template(self, name: str, body: Mapping[str, Any], *, create: bool) -> None:
        """``PUT _index_template/<name>``."""
        patterns = body.get("index_patterns")
        if not patterns:
            raise api_error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index patterns are missing;",
            )
        stored = dict(body)
        stored["index_patterns"] = [patterns] if isinstance(patterns, str) else list(patterns)
        stored["composed_of"] = list(body.get("composed_of", []))
        priority = int(stored.get("priority", 0))
        with self._lock:
            if create and name in self._index_templates:
                raise api_error(
                    400, "illegal_argument_exception", f"index template [{name}] already exists"
                )
            optional = set(stored.get("ignore_missing_component_templates", []))
            missing = [
                c
                for c in stored["composed_of"]
                if c not in self._component_templates and c not in optional
            ]
            if missing:
                raise api_error(
                    400,
                    "invalid_index_template_exception",
                    f"index_template [{name}] invalid, cause [index template [{name}] specifies "
                    f"component templates {_list(missing)} that do not exist]",
                    name=name,
                )
            self._check_overlap(name, stored["index_patterns"], priority)
            self._index_templates[name] = stored

    def _check_overlap(self, name: str, patterns: list[str], priority: int) -> None:
        clashes = {
            other: body["index_patterns"]
            for other, body in self._index_templates.items()
            if other != name
            and int(body.get("priority", 0)) == priority
            and any(_globs_overlap(p, q) for p in patterns for q in body["index_patterns"])
        }
        if clashes:
            described = ", ".join(f"{o} => {_list(p)}" for o, p in clashes.items())
            raise api_error(
                400,
                "illegal_argument_exception",
                f"index template [{name}] has index patterns {_list(patterns)} matching patterns"
                f" from existing templates {_list(list(clashes))} with patterns ({described})"
                f" that have the same priority [{priority}], multiple index templates may not"
                " match during index creation, please use a different priority",
            )

    def get_index_templates(self, name: str | None) -> dict[str, Any]:
        """``GET _index_template[/<name>]``."""
        with self._lock:
            found = _select(self._index_templates, name, "index template")
            return {"index_templates": [{"name": n, "index_template": t} for n, t in found]}

    def delete_index_template(self, name: str) -> None:
        """``DELETE _index_template/<name>``."""
        with self._lock:
            if name not in self._index_templates:
                raise _template_missing("index template", name)
            users = [d.name for d in self._data_streams.values() if d.template == name]
            if users:
                raise api_error(
                    400,
                    "illegal_argument_exception",
                    f"unable to remove composable templates [{name}] as they are in use by a "
                    f"data streams {_list(users)}",
                )
            del self._index_templates[name]

    def has_index_template(self, name: str) -> bool:
        """``HEAD _index_template/<name>``."""
        with self._lock:
            return name in self._index_templates

    def put_component_template(self, name: str, body: Mapping[str, Any], *, create: bool) -> None:
        """``PUT _component_template/<name>``."""
        if "template" not in body:
            raise api_error(
                400, "x_content_parse_exception", "[component_template] Required [template]"
            )
        with self._lock:
            if create and name in self._component_templates:
                raise api_error(
                    400,
                    "illegal_argument_exception",
                    f"component template [{name}] already exists",
                )
            self._component_templates[name] = dict(body)

    def get_component_templates(self, name: str | None) -> dict[str, Any]:
        """``GET _component_template[/<name>]``."""
        with self._lock:
            found = _select(self._component_templates, name, "component template")
            return {"component_templates": [{"name": n, "component_template": t} for n, t in found]}

    def delete_component_template(self, name: str) -> None:
        """``DELETE _component_template/<name>``."""
        with self._lock:
            if name not in self._component_templates:
                raise _template_missing("component template", name)
            users = [t for t, b in self._index_templates.items() if name in b["composed_of"]]
            if users:
                raise api_error(
                    400,
                    "illegal_argument_exception",
                    f"component templates [{name}] cannot be removed as they are still in use "
                    f"by index templates {_list(users)}",
                )
            del self._component_templates[name]

    def has_component_template(self, name: str) -> bool:
        """``HEAD _component_template/<name>``."""
        with self._lock:
            return name in self._component_templates

    # -- lifecycle policies ----------------------------------------------------------------------

    def put_policy(self, name: str, body: Mapping[str, Any]) -> None:
        """``PUT _ilm/policy/<name>``."""
        policy = body.get("policy")
        if not isinstance(policy, Mapping):
            raise api_error(
                400, "x_content_parse_exception", "[put_lifecycle_request] Required [policy]"
            )
        for phase in policy.get("phases", {}):
            if phase not in _ILM_PHASES:
                raise api_error(
                    400,
                    "illegal_argument_exception",
                    f"Timeseries lifecycle does not support phase [{phase}]",
                )
        with self._lock:
            version = self._policies.get(name, {}).get("version", 0) + 1
            self._policies[name] = {
                "version": version,
                "modified_date": _iso(self._clock()),
                "policy": dict(policy),
            }

    def get_policies(self, name: str | None) -> dict[str, Any]:
        """``GET _ilm/policy[/<name>]``."""
        with self._lock:
            names = [name] if name is not None else sorted(self._policies)
            answer = {}
            for each in names:
                if each not in self._policies:
                    raise api_error(
                        404, "resource_not_found_exception", f"Lifecycle policy not found: {each}"
                    )
                answer[each] = {**self._policies[each], "in_use_by": self._policy_users(each)}
            return answer

    def delete_policy(self, name: str) -> None:
        """``DELETE _ilm/policy/<name>``."""
        with self._lock:
            if name not in self._policies:
                raise api_error(
                    404, "resource_not_found_exception", f"Lifecycle policy not found: {name}"
                )
            users = self._policy_users(name)["indices"]
            if users:
                raise api_error(
                    400,
                    "illegal_argument_exception",
                    f"Cannot delete policy [{name}]. It is in use by one or more indices: "
                    f"{_list(users)}",
                )
            del self._policies[name]

    def _policy_users(self, name: str) -> dict[str, list[str]]:
        return {
            "indices": sorted(
                i.name
                for i in self._indices.values()
                if i.settings.get("index.lifecycle.name") == name
            ),
            "data_streams": sorted(d.name for d in self._data_streams.values() if d.policy == name),
            "composable_templates": sorted(
                t
                for t, body in self._index_templates.items()
                if self._compose(body)[1].get("index.lifecycle.name") == name
            ),
        }

    # -- data streams and indices ----------------------------------------------------------------

    def create_data_stream(self, name: str) -> None:
        """``PUT _data_stream/<name>``."""
        _check_index_name(name)
        with self._lock:
            if name in self._data_streams or name in self._indices:
                raise api_error(
                    400,
                    "resource_already_exists_exception",
                    f"data_stream [{name}] already exists",
                )
            template = self._template_for(name)
            if template is None or "data_stream" not in template[1]:
                raise api_error(
                    400,
                    "illegal_argument_exception",
                    f"no matching index template found for data stream [{name}]",
                )
            self._new_data_stream(name, *template)

    def get_data_streams(self, expression: str | None) -> dict[str, Any]:
        """``GET _data_stream[/<name>]``."""
        with self._lock:
            streams = self._select_streams(expression or "*")
            return {"data_streams": [self._describe(s) for s in streams]}

    def delete_data_stream(self, expression: str) -> None:
        """``DELETE _data_stream/<name>``."""
        with self._lock:
            for stream in self._select_streams(expression):
                for index in stream.indices:
                    del self._indices[index.name]
                del self._data_streams[stream.name]

    def has_index(self, expression: str) -> bool:
        """``HEAD /<index>``: every name in the expression exists."""
        try:
            self.resolve(expression, ignore_unavailable=False)
        except RestError:
            return False
        return True

    def resolve(self, expression: str, *, ignore_unavailable: bool) -> list[_Index]:
        """Concrete indices behind a comma-separated list of names, streams and patterns."""
        found: dict[str, _Index] = {}
        with self._lock:
            for part in expression.split(","):
                if part in ("_all", "") or "*" in part:
                    pattern = "*" if part in ("_all", "") else part
                    for stream in self._data_streams.values():
                        if _glob(pattern, stream.name):
                            found.update((i.name, i) for i in stream.indices)
                    for index in self._indices.values():
                        hidden = index.name.startswith(".") and not pattern.startswith(".")
                        if not hidden and _glob(pattern, index.name):
                            found[index.name] = index
                elif part in self._data_streams:
                    found.update((i.name, i) for i in self._data_streams[part].indices)
                elif part in self._indices:
                    found[part] = self._indices[part]
                elif not ignore_unavailable:
                    raise index_not_found(part)
        return list(found.values())

    def documents(self, name: str) -> dict[str, dict[str, Any]]:
        """Every stored document of a data stream or index (searchable or not): id → source."""
        with self._lock:
            stream = self._data_streams.get(name)
            indices = (
                stream.indices if stream else [self._indices[name]] if name in self._indices else []
            )
            return {i: d.source for index in indices for i, d in index.docs.items()}

    def data_stream_names(self) -> list[str]:
        """The names of the existing data streams."""
        with self._lock:
            return sorted(self._data_streams)

    def refresh(self, expression: str, *, ignore_unavailable: bool) -> dict[str, Any]:
        """``POST /<index>/_refresh``."""
        with self._lock:
            indices = self.resolve(expression, ignore_unavailable=ignore_unavailable)
            for index in indices:
                index.refresh()
        count = len(indices)
        return {"_shards": {"total": 2 * count, "successful": count, "failed": 0}}

    # -- bulk --------------------------------------------------------------------------------------

    def bulk(
        self, default_index: str | None, body: bytes, *, refresh: bool, hook: ItemHook
    ) -> dict[str, Any]:
        """``POST [/<index>]/_bulk``: applies each operation, answering per item."""
        started = time.monotonic()
        operations = _parse_bulk(body, default_index)
        items: list[dict[str, Any]] = []
        touched: dict[str, _Index] = {}
        with self._lock:
            items.extend({op.op_type: self._apply(op, hook, touched)} for op in operations)
            if refresh:
                for index in touched.values():
                    index.refresh()
        return {
            "errors": any("error" in item for entry in items for item in entry.values()),
            "took": int((time.monotonic() - started) * 1000),
            "items": items,
        }

    def _apply(self, op: _Operation, hook: ItemHook, touched: dict[str, _Index]) -> dict[str, Any]:
        source: dict[str, Any] | None = None
        if op.source is not None:
            try:
                source = _parse_source(op.source)
            except ValueError as exc:
                return _item_error(
                    op.index,
                    op.id,
                    400,
                    {
                        "type": "document_parsing_exception",
                        "reason": "failed to parse",
                        "caused_by": {"type": "x_content_parse_exception", "reason": str(exc)},
                    },
                )
        rejection = hook(BulkItem(op.op_type, op.index, op.id, source))
        if rejection is not None:
            return _item_error(op.index, op.id, *rejection)
        try:
            _check_index_name(op.index)
            target = self._write_target(op)
        except RestError as failure:
            error = failure.error if isinstance(failure.error, dict) else {"reason": failure.error}
            return _item_error(op.index, op.id, failure.status, error)
        touched[target.name] = target
        if op.op_type == "delete":
            return self._delete(target, op)
        assert source is not None
        return self._store(target, op, source)

    def _write_target(self, op: _Operation) -> _Index:
        stream = self._data_streams.get(op.index)
        if stream is not None:
            _require_create(op)
            return stream.write_index
        index = self._indices.get(op.index)
        if index is not None:
            if index.data_stream is not None and op.op_type != "delete":
                raise api_error(
                    400,
                    "illegal_argument_exception",
                    f"index request with op_type={op.op_type} targeting backing indices is "
                    f"disallowed, target corresponding data stream [{index.data_stream}] instead",
                )
            return index
        if op.op_type == "delete":
            raise index_not_found(op.index)
        template = self._template_for(op.index)
        if template is not None and "data_stream" in template[1]:
            _require_create(op)
            return self._new_data_stream(op.index, *template).write_index
        return self._new_index(op.index, template[1] if template else None, None)

    def _store(self, index: _Index, op: _Operation, source: dict[str, Any]) -> dict[str, Any]:
        doc_id = op.id if op.id is not None else _random_id(20)
        existing = index.docs.get(doc_id)
        if existing is not None and op.op_type == "create":
            return _item_error(
                index.name,
                doc_id,
                409,
                {
                    "type": "version_conflict_engine_exception",
                    "reason": f"[{doc_id}]: version conflict, document already exists "
                    f"(current version [{existing.version}])",
                    "index_uuid": index.uuid,
                    "shard": "0",
                    "index": index.name,
                },
            )
        try:
            if index.data_stream is not None:
                _check_timestamp(source)
            new_fields = index.mapping.check(source, doc_id)
        except DocumentRejectedError as rejected:
            return _item_error(index.name, doc_id, 400, rejected.error)
        index.mapping.add(new_fields)
        version = existing.version + 1 if existing else 1
        seq_no = index.next_seq_no
        index.next_seq_no += 1
        index.docs[doc_id] = _Doc(source, version, seq_no)
        index.pending.add(doc_id)
        return {
            "_index": index.name,
            "_id": doc_id,
            "_version": version,
            "result": "updated" if existing else "created",
            "_shards": _SHARDS_WRITE,
            "_seq_no": seq_no,
            "_primary_term": 1,
            "status": 200 if existing else 201,
        }

    def _delete(self, index: _Index, op: _Operation) -> dict[str, Any]:
        assert op.id is not None
        existing = index.docs.pop(op.id, None)
        seq_no = index.next_seq_no
        index.next_seq_no += 1
        index.pending.add(op.id)
        return {
            "_index": index.name,
            "_id": op.id,
            "_version": existing.version + 1 if existing else 1,
            "result": "deleted" if existing else "not_found",
            "_shards": _SHARDS_WRITE,
            "_seq_no": seq_no,
            "_primary_term": 1,
            "status": 200 if existing else 404,
        }

    # -- search ------------------------------------------------------------------------------------

    def count(
        self, expression: str, body: Mapping[str, Any], *, ignore_unavailable: bool
    ) -> dict[str, Any]:
        """``GET|POST /<index>/_count``."""
        unknown = set(body) - {"query"}
        if unknown:
            raise _unknown_key(sorted(unknown)[0])
        with self._lock:
            indices = self.resolve(expression, ignore_unavailable=ignore_unavailable)
            total = sum(1 for _ in matching_hits(indices, body.get("query", {"match_all": {}})))
        shards = len(indices)
        return {
            "count": total,
            "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0},
        }

    def search(
        self,
        expression: str,
        body: Mapping[str, Any],
        *,
        ignore_unavailable: bool,
        size: int | None,
        offset: int | None,
    ) -> dict[str, Any]:
        """``GET|POST /<index>/_search``."""
        started = time.monotonic()
        unknown = set(body) - {"query", "size", "from", "sort", "track_total_hits"}
        if unknown:
            raise _unknown_key(sorted(unknown)[0])
        size = int(body.get("size", 10)) if size is None else size
        offset = int(body.get("from", 0)) if offset is None else offset
        if size + offset > MAX_RESULT_WINDOW:
            raise api_error(
                400,
                "illegal_argument_exception",
                f"Result window is too large, from + size must be less than or equal to: "
                f"[{MAX_RESULT_WINDOW}] but was [{size + offset}].",
            )
        sort = sort_spec(body.get("sort"))
        with self._lock:
            indices = self.resolve(expression, ignore_unavailable=ignore_unavailable)
            matched = list(matching_hits(indices, body.get("query", {"match_all": {}})))
        if sort:
            matched.sort(key=functools.cmp_to_key(sort_comparator(sort)))
        hits = [
            {
                "_index": index.name,
                "_id": doc_id,
                "_score": None if sort else 1.0,
                "_source": source,
                **({"sort": [sort_value(index, source, f) for f, _ in sort]} if sort else {}),
            }
            for index, doc_id, source in matched[offset : offset + size]
        ]
        shards = len(indices)
        answer: dict[str, Any] = {
            "took": int((time.monotonic() - started) * 1000),
            "timed_out": False,
            "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0},
            "hits": {"max_score": None if sort or not hits else 1.0, "hits": hits},
        }
        total = total_hits(len(matched), body.get("track_total_hits", True))
        if total is not None:
            answer["hits"]["total"] = total
        return answer

    # -- internals ---------------------------------------------------------------------------------

    def _template_for(self, name: str) -> tuple[str, dict[str, Any]] | None:
        matching = [
            (int(body.get("priority", 0)), template, body)
            for template, body in self._index_templates.items()
            if any(_glob(p, name) for p in body["index_patterns"])
        ]
        if not matching:
            return None
        _, template, body = max(matching, key=lambda m: m[0])
        return template, body

    def _compose(self, template: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        parts = [
            self._component_templates[c]["template"]
            for c in template["composed_of"]
            if c in self._component_templates
        ]
        parts.append(template.get("template", {}))
        settings: dict[str, Any] = {}
        for part in parts:
            settings.update(_flat_settings(part.get("settings", {})))
        return merge_mappings(p.get("mappings", {}) for p in parts), settings

    def _new_data_stream(
        self, name: str, template_name: str, template: Mapping[str, Any]
    ) -> _DataStream:
        created = datetime.fromtimestamp(self._clock(), UTC)
        backing = f".ds-{name}-{created:%Y.%m.%d}-000001"
        index = self._new_index(backing, template, name)
        stream = _DataStream(
            name, template_name, [index], index.settings.get("index.lifecycle.name")
        )
        self._data_streams[name] = stream
        return stream

    def _new_index(
        self, name: str, template: Mapping[str, Any] | None, data_stream: str | None
    ) -> _Index:
        mappings, settings = self._compose(template) if template else ({}, {})
        if data_stream is not None:
            mappings = merge_mappings([{"properties": {"@timestamp": {"type": "date"}}}, mappings])
        index = _Index(
            name=name,
            mapping=IndexMapping.from_definition(mappings, settings),
            settings=settings,
            data_stream=data_stream,
            created=datetime.fromtimestamp(self._clock(), UTC),
        )
        self._indices[name] = index
        return index

    def _select_streams(self, expression: str) -> list[_DataStream]:
        chosen: dict[str, _DataStream] = {}
        for part in expression.split(","):
            if "*" in part or part == "_all":
                pattern = "*" if part == "_all" else part
                chosen.update((n, s) for n, s in self._data_streams.items() if _glob(pattern, n))
            elif part in self._data_streams:
                chosen[part] = self._data_streams[part]
            else:
                raise index_not_found(part)
        return [chosen[n] for n in sorted(chosen)]

    def _describe(self, stream: _DataStream) -> dict[str, Any]:
        replicas = int(stream.write_index.settings.get("index.number_of_replicas", 1))
        managed = "Index Lifecycle Management" if stream.policy else "Unmanaged"
        described: dict[str, Any] = {
            "name": stream.name,
            "timestamp_field": {"name": "@timestamp"},
            "indices": [
                {
                    "index_name": i.name,
                    "index_uuid": i.uuid,
                    "prefer_ilm": True,
                    **({"ilm_policy": stream.policy} if stream.policy else {}),
                    "managed_by": managed,
                }
                for i in stream.indices
            ],
            "generation": len(stream.indices),
            "status": "YELLOW" if replicas else "GREEN",
            "template": stream.template,
            "next_generation_managed_by": managed,
            "prefer_ilm": True,
            "hidden": False,
            "system": False,
            "allow_custom_routing": False,
            "replicated": False,
            "rollover_on_write": False,
        }
        if stream.policy:
            described["ilm_policy"] = stream.policy
        return described

    def _install_builtins(self) -> None:
        # Approximations of the stack's built-in "logs" and "metrics" templates (priority 100),
        # which a real cluster has: they decide what a write to logs-*-* does before `setup` ran.
        hot = {"phases": {"hot": {"actions": {"rollover": {"max_primary_shard_size": "50gb"}}}}}
        for kind in ("logs", "metrics"):
            self._policies[kind] = {
                "version": 1,
                "modified_date": _iso(self._clock()),
                "policy": {**hot, "_meta": {"managed": True}},
            }
            self._index_templates[kind] = {
                "index_patterns": [f"{kind}-*-*"],
                "composed_of": [],
                "priority": 100,
                "data_stream": {"hidden": False, "allow_custom_routing": False},
                "allow_auto_create": True,
                "_meta": {"managed": True, "description": f"default {kind} template"},
                "template": {
                    "settings": {"index": {"lifecycle": {"name": kind}}},
                    "mappings": {
                        "date_detection": False,
                        "dynamic_templates": [
                            {
                                "strings_as_keyword": {
                                    "match_mapping_type": "string",
                                    "mapping": {"type": "keyword", "ignore_above": 1024},
                                }
                            }
                        ],
                        "properties": {"@timestamp": {"type": "date"}},
                    },
                },
            }


def _parse_bulk(body: bytes, default_index: str | None) -> list[_Operation]:
    if not body:
        raise api_error(400, "parse_exception", "request body is required")
    if not body.endswith(b"\n"):
        raise api_error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        )
    lines = body.split(b"\n")[:-1]
    operations: list[_Operation] = []
    problems: list[str] = []
    position = 0
    while position < len(lines):
        line_no = position + 1
        raw = lines[position].strip()
        position += 1
        if not raw:
            continue
        op_type, meta = _action(raw, line_no)
        if op_type == "update":
            raise api_error(
                400,
                "illegal_argument_exception",
                "the test server does not implement the bulk [update] action",
            )
        source = None
        if op_type != "delete":
            if position >= len(lines):
                problems.append("source is missing")
            else:
                source = lines[position]
                position += 1
        index = meta.get("_index", default_index)
        doc_id = None if meta.get("_id") is None else str(meta["_id"])
        if index is None:
            problems.append("index is missing")
        if op_type == "delete" and doc_id is None:
            problems.append("id is missing")
        if doc_id is not None and len(doc_id.encode()) > _MAX_ID_BYTES:
            problems.append(
                f"id [{doc_id}] is too long, must be no longer than 512 bytes but was: "
                f"{len(doc_id.encode())}"
            )
        operations.append(_Operation(op_type, str(index), doc_id, source))
    if not operations and not problems:
        problems.append("no requests added")
    if problems:
        numbered = "".join(f"{i}: {p};" for i, p in enumerate(problems, 1))
        raise api_error(
            400, "action_request_validation_exception", f"Validation Failed: {numbered}"
        )
    return operations


def _action(raw: bytes, line_no: int) -> tuple[str, dict[str, Any]]:
    try:
        action = json.loads(raw)
    except ValueError as exc:
        raise api_error(
            400, "x_content_parse_exception", f"[{line_no}:1] Unexpected token: {exc}"
        ) from exc
    if not isinstance(action, dict) or len(action) != 1:
        raise api_error(
            400,
            "illegal_argument_exception",
            f"Malformed action/metadata line [{line_no}], expected START_OBJECT or END_OBJECT "
            f"but found [{type(action).__name__}]",
        )
    ((op_type, meta),) = action.items()
    if op_type not in _BULK_ACTIONS:
        raise api_error(
            400,
            "illegal_argument_exception",
            f"Malformed action/metadata line [{line_no}], expected field [create], [delete], "
            f"[index] or [update] but found [{op_type}]",
        )
    if not isinstance(meta, dict):
        raise api_error(
            400,
            "illegal_argument_exception",
            f"Malformed action/metadata line [{line_no}], expected a simple value for field "
            f"[{op_type}] but found [{type(meta).__name__}]",
        )
    for key in meta:
        if key not in _ACTION_PARAMS:
            raise api_error(
                400,
                "illegal_argument_exception",
                f"Action/metadata line [{line_no}] contains an unknown parameter [{key}]",
            )
    return op_type, meta


def _reject_constant(token: str) -> Any:
    raise ValueError(f"Non-standard token '{token}': non-numeric numbers are not allowed")


def _parse_source(raw: bytes) -> dict[str, Any]:
    source = json.loads(raw, parse_constant=_reject_constant)
    if not isinstance(source, dict):
        raise ValueError(f"source must be a JSON object, found {type(source).__name__}")
    return source


def _require_create(op: _Operation) -> None:
    if op.op_type != "create":
        raise api_error(
            400,
            "illegal_argument_exception",
            "only write ops with an op_type of create are allowed in data streams",
        )


def _check_timestamp(source: Mapping[str, Any]) -> None:
    value = source.get("@timestamp")
    problem = None
    if value is None:
        problem = "data stream timestamp field [@timestamp] is missing"
    elif isinstance(value, list):
        problem = "data stream timestamp field [@timestamp] encountered multiple values"
    if problem is not None:
        raise DocumentRejectedError(
            {
                "type": "document_parsing_exception",
                "reason": f"failed to parse: {problem}",
                "caused_by": {"type": "illegal_argument_exception", "reason": problem},
            }
        )


def _check_index_name(name: str) -> None:
    problem = None
    if name != name.lower():
        problem = "must be lowercase"
    elif any(c in _INVALID_INDEX_CHARS for c in name):
        problem = 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'
    elif name.startswith(("-", "_", "+")):
        problem = "must not start with '_', '-', or '+'"
    elif name in (".", "..") or len(name.encode()) > 255:
        problem = "must not be '.', '..' or longer than 255 bytes"
    if problem is not None:
        raise api_error(
            400,
            "invalid_index_name_exception",
            f"Invalid index name [{name}], {problem}",
            index=name,
            index_uuid="_na_",
        )


def _item_error(
    index: str, doc_id: str | None, status: int, error: dict[str, Any]
) -> dict[str, Any]:
    return {"_index": index, "_id": doc_id, "status": status, "error": error}


# -- helpers -------------------------------------------------------------------------------------


def _unknown_key(key: str) -> RestError:
    return api_error(400, "parsing_exception", f"Unknown key for a START_OBJECT in [{key}].")


def _select(
    store: Mapping[str, dict[str, Any]], name: str | None, what: str
) -> list[tuple[str, dict[str, Any]]]:
    if name is None:
        return sorted(store.items())
    found = []
    for part in name.split(","):
        matches = [(n, t) for n, t in store.items() if _glob(part, n)]
        if not matches and "*" not in part:
            raise _template_missing(what, part)
        found.extend(matches)
    return sorted(dict(found).items())


def _template_missing(what: str, name: str) -> RestError:
    return api_error(404, "resource_not_found_exception", f"{what} matching [{name}] not found")


def _glob(pattern: str, text: str) -> bool:
    return _glob_regex(pattern).fullmatch(text) is not None


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def _globs_overlap(left: str, right: str) -> bool:
    """True when some name matches both ``*`` patterns (automaton intersection, by recursion)."""

    @functools.cache
    def meet(i: int, j: int) -> bool:
        if i == len(left) and j == len(right):
            return True
        if i < len(left) and left[i] == "*":
            return meet(i + 1, j) or (j < len(right) and meet(i, j + 1))
        if j < len(right) and right[j] == "*":
            return meet(i, j + 1) or (i < len(left) and meet(i + 1, j))
        return i < len(left) and j < len(right) and left[i] == right[j] and meet(i + 1, j + 1)

    return meet(0, 0)


def _flat_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_settings(value, f"{name}."))
        else:
            flat[name if name.startswith("index.") else f"index.{name}"] = value
    return flat


def _seconds(value: Any) -> float | None:
    text = str(value).strip()
    if text == "-1":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text)
    if match is None:
        return 1.0
    number, unit = float(match.group(1)), match.group(2) or "ms"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def _list(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _random_id(length: int) -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()[:length]
