"""A scripted HTTP/1.1 server on a Unix or TCP socket, for testing raw HTTP clients byte by byte.

It answers each request it reads with the next ``Reply`` of its script, exactly the bytes
given, and records every request's raw bytes and every connection it accepted. A request is
read by its own small parser (request line and headers up to the blank line, then a
``Content-Length`` body), independent of the client under test. One thread serves one
connection at a time, which is all a single-connection client needs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """What the server does once it has read a request."""

    data: bytes = b""
    """Bytes written back, verbatim."""
    byte_by_byte: bool = False
    """Write ``data`` one byte per ``send``, so the client sees it in pieces."""
    pause: float = 0.0
    """With ``byte_by_byte``, wait this long before each byte (a server trickling its answer)."""
    close: bool = False
    """Close the connection after writing ``data``."""
    hang: bool = False
    """Write nothing and keep the connection open until the server stops."""
    head_only: bool = False
    """Answer after reading the request's head only and close, leaving the body unread."""


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def answer(status: int, body: bytes = b"", *headers: str) -> bytes:
    """An HTTP/1.1 answer with ``Content-Length`` and the given extra header lines."""
    lines = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ScriptedServer:
    """Serve ``replies`` in order on a Unix socket at ``unix_path`` or on TCP 127.0.0.1."""

    def __init__(self, replies: Iterable[Reply], unix_path: Path | None = None) -> None:
        self._replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed_connections = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._conn: socket.socket | None = None
        if unix_path is None:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        else:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(unix_path))
            self._listener.listen()
            self.url = f"unix://{unix_path}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()
        with self._lock:
            if self._conn is not None:  # wake a read of a connection the client keeps open
                self._conn.shutdown(socket.SHUT_RDWR)
        # shutdown() wakes a thread blocked in accept() on Linux; close() alone would not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the scripted server did not stop"
        if self.error is not None and kind is None:
            raise AssertionError("the scripted server failed") from self.error

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll ``condition`` until it holds; AssertionError after ``timeout`` seconds."""
        wait_until(condition, timeout)

    def _serve(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    return  # the listener was shut down
                with self._lock:
                    self.connections += 1
                    self._conn = conn
                with conn:
                    self._converse(conn)
                    with self._lock:
                        self._conn = None
                with self._lock:
                    self.closed_connections += 1
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def _converse(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = bytearray()
        while self._replies:
            reply = self._replies[0]
            request = _read_request(conn, pending, body=not reply.head_only)
            if request is None:
                return  # the client closed the connection
            self._replies.pop(0)
            with self._lock:
                self.requests.append(request)
            if reply.hang:
                self._stopped.wait()
                return
            if reply.byte_by_byte:
                for i in range(len(reply.data)):
                    if reply.pause and self._stopped.wait(reply.pause):
                        return
                    conn.sendall(reply.data[i : i + 1])
            else:
                conn.sendall(reply.data)
            if reply.close or reply.head_only:
                return


def _read_request(conn: socket.socket, pending: bytearray, *, body: bool) -> bytes | None:
    """One request's raw bytes (head and, when ``body``, its Content-Length body)."""
    while (end := pending.find(b"\r\n\r\n")) < 0:
        data = conn.recv(65536)
        if not data:
            return None
        pending += data
    head = bytes(pending[: end + 4])
    size = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            size = int(value)
    total = end + 4 + (size if body else 0)
    assert total <= MAX_REQUEST_BYTES
    while len(pending) < total:
        data = conn.recv(1024 * 1024)
        if not data:
            return None
        pending += data
    request = bytes(pending[:total])
    del pending[:total]
    return request
