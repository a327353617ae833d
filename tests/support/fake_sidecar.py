"""A controllable stand-in for the sidecar's ingest API, on a real loopback socket, for fault tests.

It speaks HTTP/1.1 with keep-alive like uvicorn does, parses ``POST /v1/events`` bodies, and
answers as the test tells it to: accept, reject some events per item, refuse the whole body
with a status, hold the request until released (a slow sidecar), or drop the connection
without answering. It can be stopped (connections refused), killed mid-request (open
connections cut) and restarted on the same port. Everything is recorded so tests can wait on
conditions instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WAIT_SECONDS = 10.0
"""Default deadline of ``wait_until``; a condition not met by then fails the test."""
_HOLD_LIMIT_SECONDS = 30.0
"""A held request is answered with 503 at the latest after this, so no test can hang on it."""


@dataclass(frozen=True, slots=True)
class Reply:
    """How to answer one request: ``status`` and JSON ``body``, or ``hold``/``hang_up``.

    ``hold`` keeps the request open until ``release()`` (then the reply is computed again);
    ``hang_up`` closes the connection without an answer.
    """

    status: int = 202
    body: Any = None
    hold: bool = False
    hang_up: bool = False


Behaviour = Callable[[dict[str, Any]], Reply]
"""Chooses the reply to one decoded request body."""


def accept(payload: dict[str, Any]) -> Reply:
    """Accept every event."""
    return Reply(202, {"accepted": len(payload.get("events", [])), "rejected": []})


def reject_where(predicate: Callable[[dict[str, Any]], bool]) -> Behaviour:
    """Accept every event except those ``predicate`` picks, which are rejected per item."""

    def behaviour(payload: dict[str, Any]) -> Reply:
        events = payload.get("events", [])
        rejected = [
            {
                "index": i,
                "field": f"events[{i}].latency_seconds",
                "reason": "invalid_value",
                "error": f"events[{i}].latency_seconds: must be finite and >= 0",
            }
            for i, event in enumerate(events)
            if predicate(event)
        ]
        return Reply(202, {"accepted": len(events) - len(rejected), "rejected": rejected})

    return behaviour


def refuse(status: int, reason: str = "invalid_body") -> Behaviour:
    """Refuse every request with ``status`` and the sidecar's error body."""

    def behaviour(_: dict[str, Any]) -> Reply:
        error = {"status": status, "reason": reason, "field": "model", "message": "refused by test"}
        return Reply(status, {"error": error})

    return behaviour


def at_most(max_events: int) -> Behaviour:
    """Accept bodies of up to ``max_events`` events; larger ones get 413 too_many_events."""

    def behaviour(payload: dict[str, Any]) -> Reply:
        if len(payload.get("events", [])) > max_events:
            return refuse(413, "too_many_events")(payload)
        return accept(payload)

    return behaviour


def chaos(seed: int) -> Behaviour:
    """Answers drawn at random: accept, 503, 429, hang up, refuse the body, or reject one event.

    Thread-safe (the fake answers from several threads) and reproducible for one ``seed``
    in the order the requests are answered.
    """
    rng = random.Random(seed)
    lock = threading.Lock()

    def answer(payload: dict[str, Any]) -> Reply:
        with lock:
            roll = rng.random()
        if roll < 0.4:
            return accept(payload)
        if roll < 0.55:
            return Reply(503, {"error": "busy"})
        if roll < 0.65:
            return Reply(429, {"error": "slow down"})
        if roll < 0.75:
            return Reply(hang_up=True)
        if roll < 0.85:
            return refuse(400)(payload)
        first = payload["events"][0]["id"]
        return reject_where(lambda e: e["id"] == first)(payload)

    return answer


class FakeSidecar:
    """An HTTP server on 127.0.0.1 whose answers to ``POST /v1/events`` the test controls."""

    def __init__(self, behaviour: Behaviour = accept) -> None:
        self.behaviour = behaviour
        self._lock = threading.Condition()
        self._released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.port = _free_port()
        self.requests: list[list[str]] = []
        """Event ids of every request received, answered or not, in arrival order."""
        self.accepted: list[str] = []
        """Ids of the events answered as accepted (202, not rejected per item)."""
        self.held = 0
        """Requests being held right now."""

    @property
    def url(self) -> str:
        """The base URL to give the logger."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ life cycle

    def start(self) -> FakeSidecar:
        """Listen on ``port`` (the same one after a stop, so a restart looks like one)."""
        self._released.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (held requests get no answer)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._released.set()
        # Held requests must see the stop (and hang up) before a restart can answer them.
        self.wait_until(lambda: self.held == 0)
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(WAIT_SECONDS)
        self._thread = None

    def restart(self) -> None:
        """Stop (cutting connections), then listen again on the same port."""
        self.stop()
        self.start()

    def release(self) -> None:
        """Let held requests go on; they are answered by the behaviour in force then."""
        self._released.set()

    def __enter__(self) -> FakeSidecar:
        """Start unless already started, so ``with fake.start():`` works too."""
        return self if self._server is not None else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ observation

    def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
        """Return once ``condition()`` is true; AssertionError when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met within {timeout} s")
                # Woken by every request; the timeout covers conditions on other objects.
                self._lock.wait(min(left, 0.01))

    def received_ids(self) -> list[str]:
        """Every event id received, over all requests, with repeats."""
        with self._lock:
            return [i for request in self.requests for i in request]

    # ------------------------------------------------------------------ handler side

    def _answer(self, payload: dict[str, Any]) -> Reply:
        ids = [str(e.get("id")) for e in payload.get("events", []) if isinstance(e, dict)]
        with self._lock:
            self.requests.append(ids)
            self._lock.notify_all()
        reply = self.behaviour(payload)
        if reply.hold:
            with self._lock:
                self.held += 1
                self._lock.notify_all()
            released = self._released.wait(_HOLD_LIMIT_SECONDS)
            stopped = self._server is None  # decided before stop() may return and restart
            with self._lock:
                self.held -= 1
                self._lock.notify_all()
            if stopped:  # the sidecar died while holding: no answer
                return Reply(hang_up=True)
            reply = self.behaviour(payload) if released else Reply(503, {"error": "held"})
            if reply.hold:
                reply = Reply(503, {"error": "still held"})
        if reply.status == 202 and not reply.hang_up:
            rejected = {r["index"] for r in (reply.body or {}).get("rejected", [])}
            with self._lock:
                self.accepted.extend(i for n, i in enumerate(ids) if n not in rejected)
                self._lock.notify_all()
        return reply

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSidecar

    def handle_error(self, request: object, client_address: object) -> None:
        """Connections cut by the test or the client are expected; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle and delayed ACKs
    # add ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        with contextlib.suppress(OSError):  # the peer or the test already cut the connection
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log."""

    def do_POST(self) -> None:
        """Decode the body and answer as the behaviour says."""
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except ValueError:
            self._send(400, {"error": {"reason": "invalid_json"}})
            return
        if self.path != "/v1/events" or not isinstance(payload, dict):
            self._send(404, {"error": {"reason": "not_found"}})
            return
        reply = self.server.fake._answer(payload)
        if reply.hang_up:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(reply.status, reply.body)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    """Poll ``condition`` until it is true; AssertionError when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.002)


class RecordingLog:
    """A logger for ``PredictionLogger(logger=…)`` that keeps every line it is given."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def warning(self, msg: str, /) -> None:
        """Keep a warning line."""
        self.warnings.append(msg)

    def info(self, msg: str, /) -> None:
        """Keep an info line."""
        self.infos.append(msg)

    def count(self, needle: str) -> int:
        """Warning lines that contain ``needle``."""
        return sum(needle in line for line in self.warnings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
