"""Where the prediction logger sends its batches, and the ``http.client`` transport for https.

``parse_url`` reads the logger's ``url`` (``http://``, ``https://`` or ``unix:///path.sock``);
``transport_for`` picks the transport for it: the raw HTTP/1.1 one of ``sidecar._client_http``
for http and unix, ``HttpTransport`` (``http.client``, TLS) for https. Both are used from the
logger's single flusher thread, so each holds one connection and no lock. Any failure that
leaves no HTTP answer is raised as the ``OSError`` or ``http.client.HTTPException`` it is; the
logger treats those as retryable.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from sidecar._client_http import RawHttpTransport

EVENTS_PATH = "/v1/events"
USER_AGENT = "modelwatch-prediction-logger/1"

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
"""Errors of a request written on a kept-alive connection the server had already closed."""


_T = TypeVar("_T")


def retry_once_if_stale(
    attempt: Callable[[], _T],
    close: Callable[[], object],
    *,
    reused: bool,
    stale: tuple[type[BaseException], ...],
) -> _T:
    """``attempt()``; once more on a new connection when a kept-alive one turned out closed.

    A ``stale`` error on a ``reused`` connection means the server closed it while idle
    between two batches (a keep-alive timeout or a restart): nothing was processed, so one
    immediate retry is safe. Any other failure closes the connection and is raised.
    """
    try:
        return attempt()
    except stale:
        close()
        if not reused:
            raise
    except BaseException:
        close()
        raise
    try:
        return attempt()
    except BaseException:
        close()
        raise


class TransportResponse(NamedTuple):
    """The sidecar's answer: HTTP status and body."""

    status: int
    body: bytes


class Endpoint(NamedTuple):
    """Where the events go: scheme, host, port, request path and, for unix, the socket file."""

    scheme: str
    host: str
    port: int
    path: str
    socket_path: str | None = None


UNIX_SCHEME = "unix://"
MAX_SOCKET_PATH_BYTES = 107
"""Longest Unix socket path Linux takes: ``sun_path`` holds 108 bytes with the final NUL."""

_PATH_CHARACTERS = re.compile(r"[!-~]*")
"""A request path goes into the request line as is: printable ASCII, no spaces."""


def parse_url(url: str) -> Endpoint:
    """The endpoint of the ingest API at base ``url``; ValueError naming ``url`` when it is bad."""
    if not isinstance(url, str):  # a caller without a type checker
        raise ValueError(f"url: must be a string, got {url!r}")
    if url[: len(UNIX_SCHEME)].lower() == UNIX_SCHEME:
        return _parse_unix_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url: {exc}, got {url!r}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url: must start with http://, https:// or unix://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url: has no host, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(
            f"url: must be the base URL of the ingest API, without ?query or #fragment, got {url!r}"
        )
    if not _PATH_CHARACTERS.fullmatch(parts.path):
        raise ValueError(
            f"url: the path must be printable ASCII without spaces (percent-encode the rest), "
            f"got {url!r}"
        )
    default_port = 443 if parts.scheme == "https" else 80
    path = parts.path.rstrip("/") + EVENTS_PATH
    return Endpoint(parts.scheme, parts.hostname, port or default_port, path)


def _parse_unix_url(url: str) -> Endpoint:
    """``unix://`` followed by the socket file's absolute path, taken literally."""
    socket_path = url[len(UNIX_SCHEME) :]
    if not socket_path or socket_path == "/":
        raise ValueError(f"url: unix:// needs the socket file's absolute path, got {url!r}")
    if "?" in socket_path or "#" in socket_path:
        raise ValueError(
            f"url: a unix:// URL is the socket path alone, without ?query or #fragment, got {url!r}"
        )
    if not socket_path.startswith("/"):
        raise ValueError(
            f"url: the socket path must be absolute (unix:///path/to.sock, three slashes), "
            f"got a relative path in {url!r}"
        )
    if socket_path.endswith("/"):
        raise ValueError(f"url: the socket path names a directory, not a file, got {url!r}")
    if "\0" in socket_path:
        raise ValueError(f"url: the socket path contains a NUL character, got {url!r}")
    size = len(os.fsencode(socket_path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise ValueError(
            f"url: the socket path is {size} bytes, longer than the {MAX_SOCKET_PATH_BYTES} a "
            f"Unix socket address holds, got {url!r}"
        )
    return Endpoint("unix", "localhost", 0, EVENTS_PATH, socket_path)


def transport_for(url: str, token: str | None) -> HttpTransport | RawHttpTransport:
    """The transport for ``url``: raw HTTP/1.1 for http and unix, ``http.client`` for https."""
    endpoint = parse_url(url)
    if endpoint.scheme == "https":
        return HttpTransport(url, token)
    # Imported here: the raw transport builds on this module's Endpoint and TransportResponse.
    from sidecar._client_http import RawHttpTransport

    return RawHttpTransport(endpoint, token)


class HttpTransport:
    """POSTs bodies to ``url`` + ``/v1/events`` on one reused connection; reconnects on failure.

    The transport for https; http and unix URLs get the faster ``RawHttpTransport``.
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        self._endpoint = parse_url(url)
        if self._endpoint.socket_path is not None:
            raise ValueError(f"url: HttpTransport speaks http and https only, got {url!r}")
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        """POST ``body``; ``timeout`` bounds each socket operation (connect, write, read)."""
        return retry_once_if_stale(
            lambda: self._post(body, timeout),
            self.close,
            reused=self._conn is not None,
            stale=_STALE,
        )

    def close(self) -> None:
        """Close the connection; the next ``send`` opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _post(self, body: bytes, timeout: float) -> TransportResponse:
        try:
            conn = self._ready(timeout)
            conn.request("POST", self._endpoint.path, body=body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
        except _STALE:
            raise  # send() decides whether this was a stale kept-alive connection
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return TransportResponse(response.status, data)

    def _ready(self, timeout: float) -> http.client.HTTPConnection:
        """The kept-alive connection with ``timeout`` set, or a newly opened one."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(timeout)
            conn.timeout = timeout
            return conn
        conn = self._connection(timeout)
        self._conn = conn
        conn.connect()
        # A large body leaves the kernel as several segments; Nagle would hold the last one
        # until the first is acknowledged, which a delayed ACK can stretch to ~40 ms.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        host, port = self._endpoint.host, self._endpoint.port
        if self._endpoint.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout)
        return http.client.HTTPConnection(host, port, timeout=timeout)
