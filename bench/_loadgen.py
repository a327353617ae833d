"""HTTP load generator: POSTs pre-serialised bodies over keep-alive connections, in its own process.

Run as ``python -m bench._loadgen --port P --bodies FILE --events N``. ``FILE`` holds one JSON
body per line (bodies never contain a newline). Each connection is a thread with its own
keep-alive socket; every request (head and body) is built once, so the generator's own work per
request is one ``sendall`` of bytes already in memory and the parse of a small answer. When done it
prints one JSON object on stdout: events sent and accepted, wall and CPU seconds, and the first
unexpected answer if any. With ``--progress K`` it also prints ``{"events": n}`` each time another
K events have been answered, so a parent can sample the server at those points.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import orjson


class _Shared:
    """Work claimed and answers counted by every connection thread."""

    def __init__(self, total_requests: int, progress_every: int, events_per_body: int) -> None:
        self.lock = threading.Lock()
        self.total_requests = total_requests
        self.claimed = 0
        self.answered = 0
        self.events_sent = 0
        self.accepted = 0
        self.rejected = 0
        self.failures = 0
        self.first_failure: str | None = None
        self.progress_every = progress_every
        self.next_progress = progress_every
        self.events_per_body = events_per_body

    def claim(self) -> int | None:
        with self.lock:
            if self.claimed >= self.total_requests:
                return None
            self.claimed += 1
            return self.claimed - 1

    def answer(self, status: int, payload: bytes) -> None:
        accepted = rejected = 0
        ok = status == 202
        if ok:
            try:
                answer = orjson.loads(payload)
                accepted = int(answer["accepted"])
                rejected = len(answer.get("rejected", ()))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                ok = False
        with self.lock:
            self.answered += 1
            self.events_sent += self.events_per_body
            self.accepted += accepted
            self.rejected += rejected
            if not ok:
                self.failures += 1
                if self.first_failure is None:
                    self.first_failure = f"HTTP {status}: {payload[:300]!r}"
            if self.progress_every and self.events_sent >= self.next_progress:
                self.next_progress += self.progress_every
                sys.stdout.write(orjson.dumps({"events": self.events_sent}).decode() + "\n")
                sys.stdout.flush()


def _requests(host: str, path: str, bodies: list[bytes]) -> list[bytes]:
    """Each body as a complete HTTP/1.1 request, head and body in one buffer (one ``sendall``)."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    return [head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body for body in bodies]


def _read_response(stream: BinaryIO) -> tuple[int, bytes]:
    """Status and body of one keep-alive response (the servers answer with Content-Length)."""
    status_line = stream.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, stream.read(length)


def _connection(host: str, port: int, requests: list[bytes], shared: _Shared) -> None:
    # Raw sockets rather than http.client: one sendall per request and a minimal response
    # parse, so the generator spends far less CPU per request than the server does.
    try:
        with socket.create_connection((host, port), timeout=60) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = sock.makefile("rb")
            while (index := shared.claim()) is not None:
                sock.sendall(requests[index % len(requests)])
                shared.answer(*_read_response(stream))
    except (OSError, ValueError, IndexError) as exc:
        # The server went away or answered garbage: report it in the summary, not a traceback.
        shared.answer(0, repr(exc).encode())


def main(argv: list[str] | None = None) -> int:
    """Send the requests, print the summary line; exit status 1 when any answer was not 202."""
    parser = argparse.ArgumentParser(prog="python -m bench._loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/events")
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--events-per-body", type=int, default=500)
    parser.add_argument("--events", type=int, required=True, help="events to send in all")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--progress", type=int, default=0, help="print a line every K events")
    args = parser.parse_args(argv)

    bodies = [line for line in args.bodies.read_bytes().split(b"\n") if line]
    requests = _requests(args.host, args.path, bodies)
    total = max(1, args.events // args.events_per_body)
    shared = _Shared(total, args.progress, args.events_per_body)
    threads = [
        threading.Thread(
            target=_connection, args=(args.host, args.port, requests, shared), daemon=True
        )
        for _ in range(args.connections)
    ]
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    summary = {
        "requests": shared.answered,
        "events_sent": shared.events_sent,
        "accepted": shared.accepted,
        "rejected": shared.rejected,
        "failures": shared.failures,
        "first_failure": shared.first_failure,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
    }
    sys.stdout.write(orjson.dumps({"summary": summary}).decode() + "\n")
    sys.stdout.flush()
    return 1 if shared.failures else 0


if __name__ == "__main__":
    sys.exit(main())
