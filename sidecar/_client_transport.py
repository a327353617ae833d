"""The prediction logger's default transport: ``POST /v1/events`` over one keep-alive connection.

Standard library only (``http.client``). It is used from the logger's single flusher thread, so
it holds one connection and no lock. Any failure that leaves no HTTP answer is raised as the
``OSError`` or ``http.client.HTTPException`` it is; the logger treats those as retryable.
"""

from __future__ import annotations

import http.client
import socket
from typing import NamedTuple
from urllib.parse import urlsplit

EVENTS_PATH = "/v1/events"
USER_AGENT = "modelwatch-prediction-logger/1"

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
"""Errors of a request written on a kept-alive connection the server had already closed."""


class TransportResponse(NamedTuple):
    """The sidecar's answer: HTTP status and body."""

    status: int
    body: bytes


class Endpoint(NamedTuple):
    """Where the events go: scheme, host, port and request path."""

    scheme: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> Endpoint:
    """The endpoint of the ingest API at base ``url``; ValueError naming ``url`` when it is bad."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url: {exc}, got {url!r}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url: must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url: has no host, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(
            f"url: must be the base URL of the ingest API, without ?query or #fragment, got {url!r}"
        )
    default_port = 443 if parts.scheme == "https" else 80
    path = parts.path.rstrip("/") + EVENTS_PATH
    return Endpoint(parts.scheme, parts.hostname, port or default_port, path)


class HttpTransport:
    """POSTs bodies to ``url`` + ``/v1/events`` on one reused connection; reconnects on failure."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self._endpoint = parse_url(url)
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
        reused = self._conn is not None
        try:
            return self._post(body, timeout)
        except _STALE:
            self.close()
            if not reused:
                raise
        # The server closed the idle connection between two batches (a keep-alive timeout or a
        # restart): nothing was processed, so one immediate retry on a new connection is safe.
        try:
            return self._post(body, timeout)
        except BaseException:
            self.close()
            raise

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
