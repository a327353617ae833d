"""The prediction logger's fast transport: one raw HTTP/1.1 POST per batch on a kept-alive socket.

Standard library only (``socket``). The request head is built once; each batch is written with
one ``sendmsg`` of the head and the body itself, so the body is never copied. It talks over a
Unix stream socket for ``unix://`` URLs and over TCP (with ``TCP_NODELAY``) for ``http://``.
The answer is read strictly and within bounds: a status line, at most ``MAX_HEAD_BYTES`` of
headers and a body framed by ``Content-Length``, chunked, or the connection's end, of at most
``MAX_BODY_BYTES``. Anything else is a ``ProtocolError``. It is used from the logger's single
flusher thread, so it holds one connection and no lock; any failure that leaves no complete
answer is raised as an ``OSError`` and closes the connection.
"""

from __future__ import annotations

import re
import socket
import time
from typing import NamedTuple

from sidecar._client_transport import (
    USER_AGENT,
    Endpoint,
    TransportResponse,
    retry_once_if_stale,
)

MAX_HEAD_BYTES = 64 * 1024
"""Bound on the status lines and headers of one answer, interim answers and trailers included."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Bound on one answer's body."""

_RECEIVE_BYTES = 64 * 1024
_NO_SIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
"""No SIGPIPE for a write to a closed socket, even where the process has not ignored it."""
_WRITE_FAILED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
_NO_BODY_STATUSES = (204, 304)
_LINES_TOO_LONG = f"the answer's head, chunk-size lines and trailers exceed {MAX_HEAD_BYTES} bytes"


class ProtocolError(OSError):
    """The server's bytes are not an HTTP/1.1 answer this client accepts, or exceed a bound."""


class _UnansweredError(ConnectionResetError):
    """The server closed the connection before sending a byte of the answer."""


class _Head(NamedTuple):
    """What the status line and headers say about the rest of the answer."""

    status: int
    length: int | None
    chunked: bool
    keep_alive: bool


class RawHttpTransport:
    """POSTs bodies to the ingest API at ``endpoint`` over one kept-alive stream socket."""

    def __init__(self, endpoint: Endpoint, token: str | None = None) -> None:
        self._endpoint = endpoint
        self._head = _request_head(endpoint, token)
        self._sock: socket.socket | None = None
        self._deadline = 0.0  # of the exchange under way, on time.monotonic()
        self._buffer = bytearray()  # received bytes not yet read as part of an answer

    def send(self, body: bytes, timeout: float) -> TransportResponse:
        """POST ``body``; ``timeout`` bounds the whole exchange (connect, write, read, retry).

        A server that trickles its answer a byte at a time cannot hold the sender longer: each
        socket operation gets only what is left of ``timeout``.
        """
        self._deadline = time.monotonic() + timeout
        return retry_once_if_stale(
            lambda: self._exchange(body),
            self.close,
            reused=self._sock is not None,
            stale=(_UnansweredError,),
        )

    def close(self) -> None:
        """Close the connection; the next ``send`` opens a new one."""
        sock, self._sock = self._sock, None
        self._buffer.clear()
        if sock is not None:
            sock.close()

    def _connect(self, timeout: float) -> socket.socket:
        """A new connected socket to the endpoint."""
        path = self._endpoint.socket_path
        if path is None:
            sock = socket.create_connection((self._endpoint.host, self._endpoint.port), timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if path is None:
                # Nagle would hold a body's last segment until the first is acknowledged,
                # which a delayed ACK can stretch to ~40 ms.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                sock.settimeout(timeout)
                sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock

    def _remaining(self) -> float:
        """Seconds left of the exchange's timeout; TimeoutError once none are."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete answer within the timeout")
        return left

    def _exchange(self, body: bytes) -> TransportResponse:
        if self._buffer:  # bytes nobody asked for: the connection's state is unknown
            self.close()
        sock = self._sock
        if sock is None:
            sock = self._sock = self._connect(self._remaining())
        try:
            self._send_all(sock, [self._head, b"%d\r\n\r\n" % len(body), body])
        except _WRITE_FAILED:
            # The server may have answered before reading the whole body (a 413) and closed;
            # that answer is the one to return. Without one, _UnansweredError (stale) or the error.
            answer, _ = self._read_answer(sock)
            self.close()
            return answer
        answer, keep_alive = self._read_answer(sock)
        if not keep_alive:
            self.close()
        return answer

    def _send_all(self, sock: socket.socket, parts: list[bytes]) -> None:
        """Write ``parts`` in order, in as few ``sendmsg`` calls as the socket allows, uncopied."""
        views = [memoryview(part) for part in parts if part]
        while views:
            sock.settimeout(self._remaining())
            sent = sock.sendmsg(views, (), _NO_SIGNAL)
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if sent:
                views[0] = views[0][sent:]

    def _read_answer(self, sock: socket.socket) -> tuple[TransportResponse, bool]:
        """The final answer, after any interim (1xx) ones, and whether the connection stays."""
        budget = MAX_HEAD_BYTES
        first = True
        while True:
            raw = self._read_head(sock, budget, first)
            budget -= len(raw) + 4
            head = _parse_head(raw)
            if head.status >= 200:
                break
            first = False
        if head.status in _NO_BODY_STATUSES:
            body = b""
        elif head.chunked:
            body = self._read_chunked(sock, budget)
        elif head.length is not None:
            body = self._read_exact(sock, head.length)
        else:
            body = self._read_to_close(sock)
        return TransportResponse(head.status, body), head.keep_alive

    def _receive(self, sock: socket.socket) -> bool:
        """Append what the socket has to the buffer; False at the end of the stream."""
        sock.settimeout(self._remaining())
        data = sock.recv(_RECEIVE_BYTES)
        self._buffer += data
        return bool(data)

    def _read_head(self, sock: socket.socket, budget: int, first: bool) -> bytes:
        """Status line and headers up to the blank line, without it.

        The first answer's end of stream or reset before its first byte is
        ``_UnansweredError``: nothing of the request was processed.
        """
        buffer = self._buffer
        searched = 0
        while (end := buffer.find(b"\r\n\r\n", max(searched - 3, 0))) < 0:
            if len(buffer) > budget:
                raise ProtocolError(f"the answer's head is longer than {MAX_HEAD_BYTES} bytes")
            searched = len(buffer)
            if first and not buffer:
                try:
                    more = self._receive(sock)
                except ConnectionResetError as exc:
                    raise _UnansweredError(
                        "the server reset the connection without answering"
                    ) from exc
                if not more:
                    raise _UnansweredError("the server closed the connection without answering")
            elif not self._receive(sock):
                raise ProtocolError("the server closed the connection in the answer's head")
        if end + 4 > budget:
            raise ProtocolError(f"the answer's head is longer than {MAX_HEAD_BYTES} bytes")
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        return head

    def _read_exact(self, sock: socket.socket, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            if not self._receive(sock):
                raise ProtocolError(
                    f"the server closed the connection after {len(buffer)} of {size} body bytes"
                )
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def _read_line(self, sock: socket.socket, limit: int) -> bytes:
        """One CRLF-ended line of at most ``limit`` bytes, without the CRLF."""
        buffer = self._buffer
        searched = 0
        while (end := buffer.find(b"\r\n", max(searched - 1, 0))) < 0:
            if len(buffer) > limit:
                raise ProtocolError(_LINES_TOO_LONG)
            searched = len(buffer)
            if not self._receive(sock):
                raise ProtocolError("the server closed the connection in a chunked body")
        if end + 2 > limit:
            raise ProtocolError(_LINES_TOO_LONG)
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line

    def _read_chunked(self, sock: socket.socket, budget: int) -> bytes:
        """A chunked body; chunk-size lines and trailers count against the head ``budget``."""
        body = bytearray()
        while True:
            line = self._read_line(sock, budget)
            budget -= len(line) + 2
            size_text = line.split(b";", 1)[0].rstrip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise ProtocolError(f"malformed chunk size line {line[:100]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > MAX_BODY_BYTES:
                raise ProtocolError(f"the answer's body is larger than {MAX_BODY_BYTES} bytes")
            chunk = self._read_exact(sock, size + 2)
            if chunk[size:] != b"\r\n":
                raise ProtocolError("a chunk does not end with CRLF")
            body += memoryview(chunk)[:size]
        while line := self._read_line(sock, budget):  # trailer fields, unused
            budget -= len(line) + 2
        return bytes(body)

    def _read_to_close(self, sock: socket.socket) -> bytes:
        while self._receive(sock):
            if len(self._buffer) > MAX_BODY_BYTES:
                raise ProtocolError(f"the answer's body is larger than {MAX_BODY_BYTES} bytes")
        body = bytes(self._buffer)
        self._buffer.clear()
        return body


def _request_head(endpoint: Endpoint, token: str | None) -> bytes:
    """Request line and headers up to ``Content-Length: ``, whose value each send appends."""
    host = endpoint.host
    if endpoint.socket_path is None:
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        if endpoint.port != 80:
            host = f"{host}:{endpoint.port}"
    lines = [
        f"POST {endpoint.path} HTTP/1.1",
        f"Host: {host if host.isascii() else host.encode('idna').decode('ascii')}",
        "Content-Type: application/json",
        "Accept: application/json",
        f"User-Agent: {USER_AGENT}",
    ]
    if token is not None:
        if not token or not token.isprintable() or " " in token:
            # It goes into a header: a space or control character would corrupt the request.
            raise ValueError(
                "token: must be a non-empty string without spaces or control characters"
            )
        lines.append(f"Authorization: Bearer {token}")
    lines.append("Content-Length: ")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"token: must be Latin-1 text to go into a header: {exc}") from exc


def _parse_head(raw: bytes) -> _Head:
    """Read the status line and the headers that frame the body and decide keep-alive."""
    status_line, *fields = raw.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise ProtocolError(f"malformed status line {status_line[:100]!r}")
    minor, status = match.group(1), int(match.group(2))
    if status == 101:
        raise ProtocolError("the server switched protocols (101), which was not asked for")
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection: set[bytes] = set()
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name) or _BAD_VALUE_BYTE.search(value):
            raise ProtocolError(f"malformed header line {field[:100]!r}")
        name = name.lower()
        if name == b"content-length":
            lengths.update(part.strip(b" \t") for part in value.split(b","))
        elif name == b"transfer-encoding":
            codings += (part.strip(b" \t").lower() for part in value.split(b","))
        elif name == b"connection":
            connection.update(part.strip(b" \t").lower() for part in value.split(b","))
    length = None
    if lengths:
        text = next(iter(lengths)) if len(lengths) == 1 else b""
        if not text.isdigit():
            raise ProtocolError(f"bad Content-Length {b', '.join(sorted(lengths))[:100]!r}")
        # More digits than any allowed length has: refused before int() reads them all.
        length = int(text) if len(text.lstrip(b"0")) <= 9 else MAX_BODY_BYTES + 1
        if length > MAX_BODY_BYTES:
            raise ProtocolError(f"the answer's body is larger than {MAX_BODY_BYTES} bytes")
    if codings and codings != [b"chunked"]:
        raise ProtocolError(f"unsupported Transfer-Encoding {b', '.join(codings)[:100]!r}")
    if codings and length is not None:
        raise ProtocolError("the answer has both Transfer-Encoding and Content-Length")
    delimited = bool(codings) or length is not None or status in _NO_BODY_STATUSES
    keep_alive = (
        delimited and b"close" not in connection and (minor == b"1" or b"keep-alive" in connection)
    )
    return _Head(status, length, bool(codings), keep_alive)
