"""An Elasticsearch-compatible HTTP server for tests, with fault injection.

No Elasticsearch can be installed on the development machines, so the tests drive the official
``elasticsearch`` client against this server. It implements only the REST API subset modelwatch
uses, in memory, and must stay honest to the real API: every behaviour here is one a real
single-node cluster shows, as described on these pages of the Elasticsearch reference:

- "REST API compatibility" / "Elasticsearch API conventions": requests may send
  ``Accept``/``Content-Type: application/vnd.elasticsearch+json; compatible-with=N`` (or
  ``+x-ndjson`` for bulk); N must be the server's major or the one before, and both headers must
  agree, else 400 ``media_type_header_exception``. Responses echo the requested compatible media
  type (``application/vnd.elasticsearch+json;compatible-with=N``), else ``application/json``, and
  always carry ``X-Elastic-Product: Elasticsearch`` (the clients' product check). Unknown query
  parameters are refused with 400 (``contains unrecognized parameter``); ``filter_path``
  (inclusive patterns, ``*`` and ``**``) is applied; gzip request bodies are inflated and
  responses are gzipped when the client accepts it (``http.compression``).
- "Root API" (``GET /``, ``HEAD /``: name, cluster, version number, tagline).
- "Index templates" and the create/get/delete index template and component template APIs
  (``HEAD`` for existence), "ILM: create/get/delete lifecycle policy", "Data streams" and the
  create/get/delete data stream APIs, "Bulk API", "Count API", "Search API" (``ids``, ``term``,
  ``terms``, ``exists``, ``bool``, ``match_all``), "Refresh API", "Near real-time search", and
  "Index exists" (``HEAD /<index>``) — see ``_es_cluster`` and ``_es_query``.
- "Mapping", "Dynamic mapping", "Dynamic templates", "coerce", "ignore_malformed", "Mapping limit
  settings" — see ``_es_mappings`` (why a document is rejected per item).
- "Common options" / error responses: ``{"error": {"root_cause", "type", "reason", ...},
  "status": N}``; unknown URLs answer 400 ``no handler found``, wrong methods 405.

The stack's built-in ``logs``/``metrics`` templates (``logs-*-*``, ``metrics-*-*``, priority 100)
exist unless ``builtin_templates=False``, approximated by a keyword-strings mapping.

Deliberately not implemented (a request for them fails loudly, never silently): bulk ``update``,
queries other than those listed, ``_source`` filtering, rollover, aliases, scripts, pipelines.
Error ``reason`` strings follow the real ones without the parser's ``[line:col]`` prefix.

Faults are injected by methods (all thread-safe): :meth:`EsServer.refuse_connections`,
:meth:`EsServer.fail_requests`, :meth:`EsServer.throttle_items`,
:meth:`EsServer.reject_bulk_items`, :meth:`EsServer.delay`, :meth:`EsServer.clear_faults`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support._es_cluster import BulkItem, Cluster, ItemRejection
from tests.support._es_errors import RestError, api_error

__all__ = ["DEFAULT_VERSION", "BulkItem", "EsServer", "ServerStats", "es_server_fixture"]

DEFAULT_VERSION = "9.1.0"
"""The version the server claims; a 9.x server also accepts clients asking compatible-with=8."""
WAIT_SECONDS = 10.0
"""Default deadline of :meth:`EsServer.wait_until`."""

_MEDIA = re.compile(
    r"application/(?:vnd\.elasticsearch\+)?(json|x-ndjson)\s*(?:;\s*compatible-with\s*=\s*(\d+))?",
    re.IGNORECASE,
)
_COMMON_PARAMS = frozenset({"pretty", "human", "error_trace", "filter_path"})
_TEMPLATE_PARAMS = frozenset(
    {"create", "cause", "master_timeout", "timeout", "local", "flat_settings", "include_defaults"}
)
_DATA_STREAM_PARAMS = frozenset(
    {"master_timeout", "timeout", "expand_wildcards", "include_defaults", "verbose"}
)
_BULK_PARAMS = frozenset(
    {"refresh", "timeout", "wait_for_active_shards", "include_source_on_error"}
)
_SEARCH_PARAMS = frozenset({"size", "from", "ignore_unavailable", "track_total_hits", "typed_keys"})
_REQUEST_FAULTS = {
    400: ("illegal_argument_exception", "request refused by fault injection"),
    401: (
        "security_exception",
        "unable to authenticate with provided credentials and anonymous access is not allowed "
        "for this request",
    ),
    403: (
        "security_exception",
        "action [indices:data/write/bulk[s]] is unauthorized for API key id [fault-injection] "
        "of user [modelwatch] on indices [logs-modelwatch.predictions-default], this action is "
        "granted by the index privileges [create_doc,create,index,write,all]",
    ),
    429: (
        "es_rejected_execution_exception",
        "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
        "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=0, "
        "max_coordinating_and_primary_bytes=0]",
    ),
    503: (
        "cluster_block_exception",
        "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];",
    ),
}
_ITEM_FAULTS = {
    400: ("document_parsing_exception", "failed to parse: rejected by fault injection"),
    429: (
        "es_rejected_execution_exception",
        "rejected execution of primary operation [coordinating_and_primary_bytes=0, "
        "replica_bytes=0, all_bytes=0, primary_operation_bytes=0, "
        "max_coordinating_and_primary_bytes=0]",
    ),
    503: ("unavailable_shards_exception", "primary shard is not active Timeout: [1m]"),
}
_PROXY_STATUSES = frozenset({502, 504})
_DROP = object()


@dataclass(frozen=True, slots=True)
class ServerStats:
    """Counters since start: every request received, and what faults did to them."""

    requests: int
    bulk_requests: int
    bulk_items: int
    failed_requests: int
    throttled_items: int
    rejected_items: int


@dataclass(slots=True)
class _Failing:
    status: int
    until: float | None
    remaining: int | None
    matching: re.Pattern[str] | None


class EsServer:
    """A single-node, in-memory Elasticsearch on ``127.0.0.1``; a context manager.

    ``url`` is known once started. State survives :meth:`refuse_connections` (a node that stops
    answering and comes back keeps its data), not :meth:`stop`.
    """

    def __init__(
        self,
        *,
        version: str = DEFAULT_VERSION,
        builtin_templates: bool = True,
        clock: Callable[[], float] = time.time,
        cluster_name: str = "modelwatch-test",
    ) -> None:
        self.version = version
        self.cluster_name = cluster_name
        self._major = int(version.split(".")[0])
        self._cluster = Cluster(clock=clock, builtin_templates=builtin_templates)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._connections: set[socket.socket] = set()
        self._failing: _Failing | None = None
        self._delay = 0.0
        self._throttle_fraction = 0.0
        self._throttle_status = 429
        self._throttle_seen = 0
        self._reject: Callable[[BulkItem], bool] | None = None
        self._reject_error: ItemRejection = (400, {})
        self._counts = dict.fromkeys(ServerStats.__slots__, 0)
        self.internal_errors: list[str] = []
        """Exceptions the server raised while answering (a bug here, not in the code tested)."""

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if not self._port:
            raise RuntimeError("the test Elasticsearch server is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        """The bound port (stable across :meth:`refuse_connections`)."""
        return self._port

    def start(self) -> EsServer:
        """Binds a free port and starts serving."""
        self._stopping.clear()
        self._listen()
        return self

    def stop(self) -> None:
        """Stops serving and cuts open connections."""
        self._stopping.set()
        self._close_listener()

    def __enter__(self) -> EsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- fault injection ---------------------------------------------------------------------------

    def refuse_connections(self, on: bool) -> None:
        """Stop listening (``on=True``) or listen again on the same port, keeping the data.

        While refusing, open connections are cut too, so the client sees ``ConnectionError``.
        """
        if on:
            self._close_listener()
        elif self._httpd is None:
            self._listen()

    def fail_requests(
        self,
        status: int | None = 503,
        *,
        for_seconds: float | None = None,
        count: int | None = None,
        matching: str | None = None,
    ) -> None:
        """Answer requests with ``status`` and an Elasticsearch error body.

        Lasts for ``count`` requests, or ``for_seconds``, or until cleared (``status=None`` or
        :meth:`clear_faults`). ``matching`` limits it to request paths matching that regex
        (``"_bulk"``). 401 and 403 are ``security_exception``, 429
        ``es_rejected_execution_exception``, 503 ``cluster_block_exception``;
        502 and 504 answer as a proxy in front of the cluster would: plain text, no product header.
        Note the client itself retries 429/502/503/504 (``max_retries``, default 3).
        """
        with self._lock:
            if status is None:
                self._failing = None
                return
            until = None if for_seconds is None else time.monotonic() + for_seconds
            pattern = None if matching is None else re.compile(matching)
            self._failing = _Failing(status, until, count, pattern)

    def throttle_items(self, fraction: float, status: int = 429) -> None:
        """Refuse a deterministic ``fraction`` of bulk items, per item, with ``status``.

        The refusals are evenly spread (0.5 refuses every second item); 429 is
        ``es_rejected_execution_exception``, as a node with a full write queue answers.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {fraction}")
        with self._lock:
            self._throttle_fraction = fraction
            self._throttle_status = status
            self._throttle_seen = 0

    def reject_bulk_items(
        self,
        predicate: Callable[[BulkItem], bool] | None,
        *,
        status: int = 400,
        error_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Refuse the bulk items ``predicate`` picks, per item, before they are stored.

        The default error for 400 is ``document_parsing_exception``; ``None`` stops rejecting.
        """
        default_type, default_reason = _ITEM_FAULTS.get(status, ("exception", "rejected"))
        with self._lock:
            self._reject = predicate
            self._reject_error = (
                status,
                {"type": error_type or default_type, "reason": reason or default_reason},
            )

    def delay(self, seconds: float) -> None:
        """Hold every request ``seconds`` before answering (0 turns it off); for client timeouts."""
        with self._lock:
            self._delay = seconds

    def clear_faults(self) -> None:
        """Turn off every fault except refused connections."""
        self.fail_requests(None)
        self.throttle_items(0.0)
        self.reject_bulk_items(None)
        self.delay(0.0)

    # -- observation -------------------------------------------------------------------------------

    def stats(self) -> ServerStats:
        """A snapshot of the counters."""
        with self._lock:
            return ServerStats(**self._counts)

    @property
    def bulk_requests(self) -> int:
        """Bulk requests received, including those a fault failed."""
        return self.stats().bulk_requests

    @property
    def bulk_items(self) -> int:
        """Operations in the bulk requests that reached the cluster (not failed whole)."""
        return self.stats().bulk_items

    def documents(self, name: str) -> dict[str, dict[str, Any]]:
        """Every document stored in data stream or index ``name``, refreshed or not: id → source."""
        return self._cluster.documents(name)

    def data_streams(self) -> list[str]:
        """The names of the data streams that exist."""
        return self._cluster.data_stream_names()

    def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
        """Polls ``condition`` until it holds; fails the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {timeout}s: {condition}")
            time.sleep(0.01)

    # -- serving -----------------------------------------------------------------------------------

    def _listen(self) -> None:
        httpd = _HttpServer(("127.0.0.1", self._port), _Handler)
        httpd.es = self
        self._port = httpd.server_address[1]
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._httpd, self._thread = httpd, thread

    def _close_listener(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[key] += amount

    def _injected_failure(self, path: str) -> int | None:
        with self._lock:
            failing = self._failing
            if failing is None or (failing.matching and not failing.matching.search(path)):
                return None
            if failing.until is not None and time.monotonic() >= failing.until:
                self._failing = None
                return None
            if failing.remaining is not None:
                if failing.remaining <= 0:
                    self._failing = None
                    return None
                failing.remaining -= 1
            self._counts["failed_requests"] += 1
            return failing.status

    def _item_hook(self, item: BulkItem) -> ItemRejection | None:
        with self._lock:
            self._counts["bulk_items"] += 1
            reject = self._reject
            error = self._reject_error
        if reject is not None and reject(item):
            self._count("rejected_items")
            return error[0], dict(error[1])
        with self._lock:
            if self._throttle_fraction <= 0.0:
                return None
            self._throttle_seen += 1
            seen, fraction = self._throttle_seen, self._throttle_fraction
            status = self._throttle_status
            self._counts["throttled_items"] += int(seen * fraction) > int((seen - 1) * fraction)
            if int(seen * fraction) == int((seen - 1) * fraction):
                return None
        error_type, reason = _ITEM_FAULTS.get(status, ("exception", "rejected"))
        return status, {"type": error_type, "reason": reason}

    def _wait_delay(self) -> None:
        with self._lock:
            seconds = self._delay
        if seconds > 0:
            self._stopping.wait(seconds)

    # -- API ---------------------------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        previous = self._major - 1
        return {
            "name": "modelwatch-test-node",
            "cluster_name": self.cluster_name,
            "cluster_uuid": "mOdElWaTcHtEsTcLuStEr0",
            "version": {
                "number": self.version,
                "build_flavor": "default",
                "build_type": "tar",
                "build_hash": "0" * 40,
                "build_date": "2025-01-01T00:00:00.000000000Z",
                "build_snapshot": False,
                "lucene_version": "10.0.0" if self._major >= 9 else "9.10.0",
                "minimum_wire_compatibility_version": f"{previous}.18.0",
                "minimum_index_compatibility_version": f"{previous}.0.0",
            },
            "tagline": "You Know, for Search",
        }

    def _route(
        self, method: str, parts: list[str], params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        path = "/" + "/".join(parts)
        head = parts[0] if parts else ""
        name = parts[1] if len(parts) > 1 else None
        cluster = self._cluster

        if not parts:
            _allow(method, path, ("GET", "HEAD"))
            _check_params(path, params, frozenset())
            return 200, self._info()
        if head in ("_index_template", "_component_template") and len(parts) <= 2:
            _check_params(path, params, _TEMPLATE_PARAMS)
            index = head == "_index_template"
            if method == "GET" or (method == "HEAD" and name is None):
                found = (
                    cluster.get_index_templates(name)
                    if index
                    else cluster.get_component_templates(name)
                )
                return 200, found
            if name is None:
                raise _method_not_allowed(method, path, ("GET",))
            _allow(method, path, ("GET", "HEAD", "PUT", "POST", "DELETE"))
            if method == "HEAD":
                exists = (
                    cluster.has_index_template(name)
                    if index
                    else cluster.has_component_template(name)
                )
                return (200 if exists else 404), {}
            if method == "DELETE":
                if index:
                    cluster.delete_index_template(name)
                else:
                    cluster.delete_component_template(name)
                return 200, {"acknowledged": True}
            body = _json(raw, required=True)
            create = params.get("create", "false") in ("true", "")
            if index:
                cluster.put_index_template(name, body, create=create)
            else:
                cluster.put_component_template(name, body, create=create)
            return 200, {"acknowledged": True}
        if head == "_ilm" and len(parts) in (2, 3) and parts[1] == "policy":
            _check_params(path, params, frozenset({"master_timeout", "timeout"}))
            policy = parts[2] if len(parts) == 3 else None
            if method == "GET":
                return 200, cluster.get_policies(policy)
            if policy is None:
                raise _method_not_allowed(method, path, ("GET",))
            _allow(method, path, ("GET", "PUT", "DELETE"))
            if method == "DELETE":
                cluster.delete_policy(policy)
            else:
                cluster.put_policy(policy, _json(raw, required=True))
            return 200, {"acknowledged": True}
        if head == "_data_stream" and len(parts) <= 2:
            _check_params(path, params, _DATA_STREAM_PARAMS)
            if method == "GET":
                return 200, cluster.get_data_streams(name)
            if name is None:
                raise _method_not_allowed(method, path, ("GET",))
            _allow(method, path, ("GET", "PUT", "DELETE"))
            if method == "PUT":
                cluster.create_data_stream(name)
            else:
                cluster.delete_data_stream(name)
            return 200, {"acknowledged": True}

        target, api = (None, head) if head.startswith("_") else (head, name)
        if len(parts) > (1 if target is None else 2):
            raise _no_handler(method, path)
        ignore = params.get("ignore_unavailable", "false") in ("true", "")
        if api == "_bulk":
            _allow(method, path, ("POST", "PUT"))
            _check_params(path, params, _BULK_PARAMS)
            self._count("bulk_requests")
            refresh = params.get("refresh", "false") in ("true", "", "wait_for")
            return 200, cluster.bulk(target, raw, refresh=refresh, hook=self._item_hook)
        if api == "_count":
            _allow(method, path, ("GET", "POST"))
            _check_params(path, params, frozenset({"ignore_unavailable"}))
            return 200, cluster.count(target or "_all", _json(raw), ignore_unavailable=ignore)
        if api == "_search":
            _allow(method, path, ("GET", "POST"))
            _check_params(path, params, _SEARCH_PARAMS)
            body = _json(raw)
            if "track_total_hits" in params:
                body["track_total_hits"] = _track_total_hits(params["track_total_hits"])
            return 200, cluster.search(
                target or "_all",
                body,
                ignore_unavailable=ignore,
                size=_int_param(params, "size"),
                offset=_int_param(params, "from"),
            )
        if api == "_refresh":
            _allow(method, path, ("GET", "POST"))
            _check_params(path, params, frozenset({"ignore_unavailable"}))
            return 200, cluster.refresh(target or "_all", ignore_unavailable=ignore)
        if target is not None and api is None and method == "HEAD":
            _check_params(path, params, frozenset())
            return (200 if cluster.has_index(target) else 404), {}
        if target is not None and api is None and method == "GET":
            cluster.resolve(target, ignore_unavailable=False)
            raise _not_implemented(f"GET /{target}")
        raise _no_handler(method, path)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    es: EsServer

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-request is normal in fault tests; anything else is recorded.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm and the
        # client's delayed ACK hold every response for ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.es._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.es._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        es = self.server.es
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "gzip" in (self.headers.get("Content-Encoding") or "").lower():
            raw = gzip.decompress(raw)
        split = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in split.path.split("/") if p]
        params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        es._count("requests")
        es._wait_delay()
        content_type = "application/json"
        try:
            content_type = _negotiate(self.headers, es._major, bool(raw))
            status = es._injected_failure(split.path)
            if status in _PROXY_STATUSES:
                self._send_proxy_error(method, status)
                return
            if status is not None:
                error_type, reason = _REQUEST_FAULTS.get(status, ("exception", "injected failure"))
                raise api_error(status, error_type, reason)
            code, body = es._route(method, parts, params, raw)
        except RestError as failure:
            code, body = failure.status, failure.body()
        except Exception as exc:  # a server bug must reach the test as a 500
            es.internal_errors.append(f"{method} {self.path}: {exc!r}")
            code, body = 500, api_error(500, "exception", repr(exc)).body()
        if "filter_path" in params and code < 300:
            body = _filter_path(body, params["filter_path"])
        self._send(method, code, body, content_type)

    def _send(self, method: str, status: int, body: Any, content_type: str) -> None:
        payload = json.dumps(body).encode()
        gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "").lower()
        if gzipped:
            payload = gzip.compress(payload)
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", content_type)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def _send_proxy_error(self, method: str, status: int) -> None:
        payload = f"{status} {self.responses[status][0]}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)


def _negotiate(headers: Any, major: int, has_body: bool) -> str:
    """The response ``Content-Type`` for these request headers, or a 400/406 failure."""
    accept = headers.get("Accept") or ""
    sent_type = headers.get("Content-Type") or ""
    accept_match = _MEDIA.search(accept)
    type_match = _MEDIA.search(sent_type) if sent_type else None
    if has_body and type_match is None:
        raise RestError(406, f"Content-Type header [{sent_type}] is not supported")
    accept_version = accept_match.group(2) if accept_match else None
    type_version = type_match.group(2) if type_match and has_body else None
    problem = None
    for header, version, value in (
        ("Accept", accept_version, accept),
        ("Content-Type", type_version, sent_type),
    ):
        if version is not None and int(version) not in (major, major - 1):
            problem = (
                f"{header} version must be either version {major} or {major - 1}, but found "
                f"{version}. {header}={value}"
            )
    if (
        problem is None
        and has_body
        and accept_version != type_version
        and (accept_version is not None or type_version is not None)
    ):
        problem = (
            "A compatible version is required on both Content-Type and Accept headers if either "
            "one has requested a compatible version and the compatible versions must match. "
            f"Content-Type={sent_type}, Accept={accept}"
        )
    if problem is not None:
        raise api_error(
            400,
            "media_type_header_exception",
            "Invalid media-type value on headers [Content-Type, Accept]",
            caused_by={"type": "status_exception", "reason": problem},
        )
    if accept_version is not None:
        return f"application/vnd.elasticsearch+json;compatible-with={accept_version}"
    return "application/json"


def _json(raw: bytes, *, required: bool = False) -> dict[str, Any]:
    if not raw.strip():
        if required:
            raise api_error(400, "parse_exception", "request body is required")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise api_error(400, "x_content_parse_exception", f"Unexpected token: {exc}") from exc
    if not isinstance(body, dict):
        raise api_error(400, "parse_exception", "request body must be a JSON object")
    return body


def _allow(method: str, path: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise _method_not_allowed(method, path, allowed)


def _method_not_allowed(method: str, path: str, allowed: tuple[str, ...]) -> RestError:
    return RestError(
        405,
        f"Incorrect HTTP method for uri [{path}] and method [{method}], allowed: "
        f"[{', '.join(sorted(set(allowed)))}]",
    )


def _no_handler(method: str, path: str) -> RestError:
    return RestError(400, f"no handler found for uri [{path}] and method [{method}]")


def _not_implemented(what: str) -> RestError:
    return api_error(
        400, "illegal_argument_exception", f"the test server does not implement {what}"
    )


def _check_params(path: str, params: dict[str, str], allowed: frozenset[str]) -> None:
    for key in params:
        if key not in allowed and key not in _COMMON_PARAMS:
            raise api_error(
                400,
                "illegal_argument_exception",
                f"request [{path}] contains unrecognized parameter: [{key}]",
            )


def _int_param(params: dict[str, str], key: str) -> int | None:
    return int(params[key]) if key in params else None


def _track_total_hits(value: str) -> bool | int:
    if value in ("true", ""):
        return True
    if value == "false":
        return False
    return int(value)


def _filter_path(body: Any, spec: str) -> Any:
    patterns = [p.split(".") for p in spec.split(",") if p]
    filtered = _filter(body, patterns)
    return {} if filtered is _DROP else filtered


def _filter(value: Any, patterns: list[list[str]]) -> Any:
    if any(not p for p in patterns):
        return value
    if isinstance(value, list):
        kept = [f for f in (_filter(v, patterns) for v in value) if f is not _DROP]
        return kept if kept else _DROP
    if not isinstance(value, dict):
        return _DROP
    kept_items = {}
    for key, child in value.items():
        deeper = list(_advance(patterns, key))
        if deeper:
            filtered = _filter(child, deeper)
            if filtered is not _DROP:
                kept_items[key] = filtered
    return kept_items if kept_items else _DROP


def _advance(patterns: list[list[str]], key: str) -> Iterator[list[str]]:
    for pattern in patterns:
        if pattern[0] == "**":
            yield pattern
            rest = pattern[1:]
            if not rest:
                yield []
            elif _glob(rest[0], key):
                yield rest[1:]
        elif _glob(pattern[0], key):
            yield pattern[1:]


def _glob(pattern: str, text: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), text) is not None


def es_server_fixture(**options: Any) -> Any:
    """A pytest fixture yielding a started :class:`EsServer`, to assign at module level.

    ``es_server = es_server_fixture()``; ``options`` go to :class:`EsServer`. On teardown it
    fails the test if the server itself raised while answering.
    """

    @pytest.fixture
    def fixture() -> Iterator[EsServer]:
        with EsServer(**options) as server:
            yield server
            assert not server.internal_errors, server.internal_errors

    return fixture
