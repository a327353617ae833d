"""The logger's raw HTTP/1.1 transport and its URLs, against real servers on Unix and TCP sockets.

A scripted server checks the exact request bytes and answers with every framing the client
must read (and some it must refuse); the real ingest app served by uvicorn on a Unix socket
checks that a logger-shaped batch gets its answer end to end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
import uvicorn

from sidecar._client_http import MAX_BODY_BYTES, ProtocolError, RawHttpTransport
from sidecar._client_transport import (
    USER_AGENT,
    Endpoint,
    HttpTransport,
    parse_url,
    transport_for,
)
from sidecar._listen import QuietServer
from sidecar.counters import IngestCounters
from sidecar.engine import EngineConfig
from sidecar.events import IngestLimits
from sidecar.feedback import FeedbackStore
from sidecar.ingest import create_ingest_app
from sidecar.monitors import MonitorRegistry
from tests.support.profiles import make_profile
from tests.support.raw_http_server import Reply, ScriptedServer, answer, wait_until

TOKEN = "s3cret"  # noqa: S105 - a test token
TIMEOUT = 10.0
OK = answer(202, b'{"accepted": 1, "rejected": []}', "Content-Type: application/json")


@pytest.fixture(params=["unix", "tcp"])
def family(request: pytest.FixtureRequest) -> str:
    """Run a test over a Unix socket and over TCP."""
    return str(request.param)


@pytest.fixture
def socket_dir(tmp_path: Path) -> Path:
    """Where a test's sockets live."""
    assert len(os.fsencode(tmp_path / "ingest.sock")) <= 107
    return tmp_path


def _server(family: str, socket_dir: Path, *replies: Reply) -> ScriptedServer:
    return ScriptedServer(replies, socket_dir / "s.sock" if family == "unix" else None)


Connect = Callable[..., RawHttpTransport]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Make raw transports for a URL (and token); each is closed when the test ends."""
    made: list[RawHttpTransport] = []

    def make(
        url: str, token: str | None = None, kind: type[RawHttpTransport] = RawHttpTransport
    ) -> RawHttpTransport:
        made.append(kind(parse_url(url), token))
        return made[-1]

    yield make
    for transport in made:
        transport.close()


# --------------------------------------------------------------------------- URLs


def test_unix_url_gives_the_socket_path_and_the_events_path() -> None:
    """``unix:///abs/path.sock`` names the socket file; host is localhost and path /v1/events."""
    assert parse_url("unix:///var/run/modelwatch/ingest.sock") == Endpoint(
        "unix", "localhost", 0, "/v1/events", "/var/run/modelwatch/ingest.sock"
    )


def test_http_urls_keep_their_meaning() -> None:
    """The http and https URLs still give host, port and base path, with no socket path."""
    assert parse_url("http://sidecar:9110/base/") == Endpoint(
        "http", "sidecar", 9110, "/base/v1/events", None
    )
    assert parse_url("https://sidecar") == Endpoint("https", "sidecar", 443, "/v1/events", None)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("unix://", "absolute path"),
        ("unix:///", "absolute path"),
        ("unix://run/ingest.sock", "must be absolute"),
        ("unix:ingest.sock", "must start with"),
        ("unix:///run/ingest.sock?x=1", "without ?query or #fragment"),
        ("unix:///run/ingest.sock#top", "without ?query or #fragment"),
        ("unix:///run/modelwatch/", "names a directory"),
        ("unix:///run/a\0b.sock", "NUL"),
        ("unix:///" + "s" * 107, "108 bytes, longer than the 107"),
        ("ftp://sidecar", "must start with http://, https:// or unix://"),
        ("http://sidecar/a b", "printable ASCII"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    """Each bad URL is a ValueError that names ``url`` and says what is wrong."""
    with pytest.raises(ValueError, match=r"^url: ") as caught:
        parse_url(url)
    assert reason in str(caught.value)


def test_longest_unix_socket_path_is_accepted() -> None:
    """A socket path of exactly 107 bytes fits a Unix socket address."""
    assert parse_url("unix:///" + "s" * 106).socket_path == "/" + "s" * 106


def test_transport_for_picks_raw_http_except_for_https() -> None:
    """URLs with http and unix get the raw transport, https keeps http.client."""
    assert isinstance(transport_for("http://127.0.0.1:1", None), RawHttpTransport)
    assert isinstance(transport_for("unix:///run/ingest.sock", TOKEN), RawHttpTransport)
    assert isinstance(transport_for("https://sidecar", TOKEN), HttpTransport)
    with pytest.raises(ValueError, match=r"^url: "):
        transport_for("unix://relative.sock", None)


def test_http_client_transport_refuses_unix_urls() -> None:
    """HttpTransport cannot reach a Unix socket, so it refuses the URL instead of misrouting."""
    with pytest.raises(ValueError, match=r"^url: HttpTransport speaks http and https only"):
        HttpTransport("unix:///run/ingest.sock")


def test_raw_transport_refuses_a_token_that_would_break_the_header() -> None:
    """A token with a line break cannot be smuggled into the request head."""
    with pytest.raises(ValueError, match=r"^token: "):
        RawHttpTransport(parse_url("http://sidecar"), "a\r\nX-Evil: 1")


# --------------------------------------------------------------------------- the request


def test_request_bytes_are_exactly_the_post(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """The server receives one POST with exactly the expected head (token included) and body."""
    with _server(family, socket_dir, Reply(OK)) as server:
        base = server.url if family == "unix" else server.url + "/base"
        transport = connect(base, TOKEN)
        answer_ = transport.send(b'{"a": 1}', TIMEOUT)
    host = "localhost" if family == "unix" else server.url.removeprefix("http://")
    path = "/v1/events" if family == "unix" else "/base/v1/events"
    expected = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        "Content-Length: 8\r\n"
        '\r\n{"a": 1}'
    ).encode()
    assert server.requests == [expected]
    assert answer_ == (202, b'{"accepted": 1, "rejected": []}')


def test_no_token_no_authorization_header(family: str, socket_dir: Path, connect: Connect) -> None:
    """Without a token the request has no Authorization header."""
    with _server(family, socket_dir, Reply(OK)) as server:
        transport = connect(server.url)
        transport.send(b"{}", TIMEOUT)
    assert b"authorization" not in server.requests[0].lower()
    assert server.requests[0].endswith(b"Content-Length: 2\r\n\r\n{}")


class _SmallSendBuffer(RawHttpTransport):
    """Connects with a tiny send buffer and records what each ``sendmsg`` wrote."""

    def __init__(self, endpoint: Endpoint, token: str | None) -> None:
        super().__init__(endpoint, token)
        self.sent: list[int] = []

    def _connect(self, timeout: float) -> socket.socket:
        sock = super()._connect(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        counting = _CountingSocket(fileno=sock.detach())
        counting.sent = self.sent
        return counting


class _CountingSocket(socket.socket):
    """A socket that records the byte count of each ``sendmsg``."""

    sent: list[int]

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        written = super().sendmsg(buffers, *args)
        self.sent.append(written)
        return written


def test_large_body_arrives_intact_through_partial_writes(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """A 1 MB body written in many partial sendmsg calls reaches the server byte for byte."""
    body = np.random.default_rng(3).integers(0, 256, 1024 * 1024, dtype=np.uint8).tobytes()
    with _server(family, socket_dir, Reply(OK), Reply(OK)) as server:
        transport = connect(server.url, kind=_SmallSendBuffer)
        assert isinstance(transport, _SmallSendBuffer)
        assert transport.send(body, TIMEOUT).status == 202
        assert transport.send(body[::-1], TIMEOUT).status == 202
    assert len(transport.sent) > 2  # partial writes did happen
    assert sum(transport.sent) == sum(len(r) for r in server.requests)
    assert server.requests[0].endswith(b"\r\n\r\n" + body)
    assert server.requests[1].endswith(b"\r\n\r\n" + body[::-1])
    assert server.connections == 1


# --------------------------------------------------------------------------- answers


def test_kept_alive_connection_is_reused(family: str, socket_dir: Path, connect: Connect) -> None:
    """Content-Length answers leave the connection open for the next request."""
    second = answer(200, b"second")
    with _server(family, socket_dir, Reply(OK), Reply(second)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert transport.send(b"{}", TIMEOUT) == (200, b"second")
        assert server.connections == 1


def test_chunked_answer_is_reassembled(family: str, socket_dir: Path, connect: Connect) -> None:
    """A chunked body with extensions and trailers is joined, and the connection is kept."""
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    with _server(family, socket_dir, Reply(chunked), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT) == (202, b"hello 0123456789")
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 1


def test_answer_in_one_byte_writes_is_read_whole(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """An answer the server writes one byte at a time parses like one written at once."""
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    with _server(family, socket_dir, Reply(chunked, byte_by_byte=True), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT) == (202, b"abc")
        assert transport.send(b"{}", TIMEOUT).status == 202


def test_close_delimited_answer_is_read_to_the_end(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """Without Content-Length or chunking the body runs to the close; the next send reconnects."""
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    with _server(family, socket_dir, Reply(until_close, close=True), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT) == (200, b"all of it")
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 2


def test_connection_close_answer_closes_the_connection(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """``Connection: close`` makes the client close after the body and reconnect next time."""
    closing = answer(503, b"busy", "Connection: close")
    with _server(family, socket_dir, Reply(closing), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT) == (503, b"busy")
        server.wait_until(lambda: server.closed_connections == 1)  # the client hung up
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 2


def test_http10_answer_without_keep_alive_closes(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """An HTTP/1.0 answer ends the connection unless it says keep-alive."""
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with _server(family, socket_dir, Reply(old), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT) == (200, b"ok")
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 2


def test_http10_answer_with_keep_alive_keeps_the_connection(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """An HTTP/1.0 answer saying ``Connection: keep-alive`` leaves the connection open."""
    kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    with _server(family, socket_dir, Reply(kept), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT) == (200, b"ok")
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 1


def test_unasked_bytes_after_an_answer_retire_the_connection(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """Bytes beyond the answer are never taken as the next request's answer."""
    extra = OK + answer(500, b"not yours")
    with _server(family, socket_dir, Reply(extra), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 2


def test_interim_continue_is_skipped(family: str, socket_dir: Path, connect: Connect) -> None:
    """A 100 Continue before the answer is read past; the final status is returned."""
    with _server(family, socket_dir, Reply(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT).status == 202


def test_no_content_answer_has_no_body(family: str, socket_dir: Path, connect: Connect) -> None:
    """A 204 has an empty body and keeps the connection, whatever its headers say."""
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    with _server(family, socket_dir, Reply(no_content), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT) == (204, b"")
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
        (b"garbage\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "longer than 65536"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
            "larger than",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "CRLF"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "after 5 of 10"),
        (b"HTTP/1.1 200 OK\r\nContent", "in the answer's head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "larger than"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % (MAX_BODY_BYTES + 1),
            "larger than",
        ),
        # Two interim answers, each within the bound, together past it.
        ((b"HTTP/1.1 100 Continue\r\nX: " + b"a" * 40_000 + b"\r\n\r\n") * 2, "longer than 65536"),
    ],
)
def test_malformed_answers_are_protocol_errors(
    family: str, socket_dir: Path, reply: bytes, message: str, connect: Connect
) -> None:
    """An answer the client cannot trust raises ProtocolError and drops the connection."""
    with _server(family, socket_dir, Reply(reply, close=True), Reply(OK)) as server:
        transport = connect(server.url)
        with pytest.raises(ProtocolError, match=message):
            transport.send(b"{}", TIMEOUT)
        assert transport.send(b"{}", TIMEOUT).status == 202
        assert server.connections == 2


# --------------------------------------------------------------------------- failures


def test_stale_kept_alive_connection_is_retried_once(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """A kept-alive connection the server closed while idle is replaced without a lost request."""
    with _server(family, socket_dir, Reply(OK, close=True), Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT).status == 202
        server.wait_until(lambda: server.closed_connections == 1)
        assert transport.send(b'{"n": 2}', TIMEOUT).status == 202
    assert len(server.requests) == 2
    assert server.requests[1].endswith(b'{"n": 2}')
    assert server.connections == 2


def test_fresh_connection_closed_without_answer_raises(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """A new connection closed before any answer raises at once, without a second try."""
    with _server(family, socket_dir, Reply(close=True), Reply(OK)) as server:
        transport = connect(server.url)
        with pytest.raises(ConnectionResetError, match="without answering"):
            transport.send(b"{}", TIMEOUT)
    assert len(server.requests) == 1


def test_answer_cut_short_on_a_reused_connection_is_not_retried(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """Once an answer has begun, a failure is raised: the request may have been processed."""
    cut = Reply(b"HTTP/1.1 20", close=True)
    with _server(family, socket_dir, Reply(OK), cut, Reply(OK)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT).status == 202
        with pytest.raises(ProtocolError, match="in the answer's head"):
            transport.send(b"{}", TIMEOUT)
    assert len(server.requests) == 2


def test_server_that_never_answers_times_out(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """A server that reads the request and stays silent makes send() raise TimeoutError."""
    with _server(family, socket_dir, Reply(OK), Reply(hang=True)) as server:
        transport = connect(server.url)
        assert transport.send(b"{}", TIMEOUT).status == 202
        with pytest.raises(TimeoutError):  # the kept-alive socket takes the new timeout
            transport.send(b"{}", 0.05)


def test_timeout_bounds_the_whole_answer_not_each_read(
    family: str, socket_dir: Path, connect: Connect
) -> None:
    """A server trickling its answer, each byte well within the timeout, still times out."""
    trickle = Reply(answer(202, b"x" * 400), byte_by_byte=True, pause=0.01)
    with _server(family, socket_dir, trickle) as server:
        transport = connect(server.url)
        with pytest.raises(TimeoutError):  # 400 bytes at 10 ms each take 4 s; the timeout 0.3
            transport.send(b"{}", 0.3)


def test_nobody_listening_raises(socket_dir: Path, connect: Connect) -> None:
    """A Unix socket path nobody listens on raises the connect error."""
    transport = connect(f"unix://{socket_dir}/none.sock")
    with pytest.raises(FileNotFoundError):
        transport.send(b"{}", TIMEOUT)


def test_early_answer_is_returned_when_the_body_write_fails(
    socket_dir: Path, connect: Connect
) -> None:
    """A server answering 413 after the head and closing gets its answer seen, not an error."""
    refused = answer(413, b"too large", "Connection: close")
    body = b"x" * (8 * 1024 * 1024)
    with _server("unix", socket_dir, Reply(refused, head_only=True)) as server:
        transport = connect(server.url)
        assert transport.send(body, TIMEOUT) == (413, b"too large")


# --------------------------------------------------------------------------- the real sidecar


def _ingest_app(token: str | None) -> Any:
    rng = np.random.default_rng(5)
    profile = make_profile(
        model="model",
        numeric={"x": rng.normal(0, 1, 1000)},
        prediction=rng.choice(["0", "1"], 1000).tolist(),
        prediction_kind="categorical",
    )
    return create_ingest_app(
        monitors=MonitorRegistry.from_profiles([profile], EngineConfig()),
        counters=IngestCounters(),
        feedback=FeedbackStore(),
        limits=IngestLimits(max_body_bytes=256 * 1024),
        token=token,
        logger=structlog.wrap_logger(
            structlog.testing.CapturingLogger(),
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        ),
    )


@pytest.fixture
def sidecar_socket(socket_dir: Path) -> Iterator[Path]:
    """The real ingest app served by uvicorn on a Unix socket, with ``TOKEN``."""
    path = socket_dir / "ingest.sock"
    config = uvicorn.Config(
        _ingest_app(TOKEN), uds=str(path), log_config=None, access_log=False, lifespan="off"
    )
    server = QuietServer(config)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 30.0)
        assert server.started, "uvicorn did not start"
        yield path
    finally:
        server.should_exit = True
        thread.join(30)


def _batch(n: int) -> bytes:
    events = [
        {
            "id": f"e{i}",
            "timestamp": 1_700_000_000.0 + i,
            "latency_seconds": 0.002,
            "status": "ok",
            "features": {"x": i / 10},
            "prediction": str(i % 2),
        }
        for i in range(n)
    ]
    return json.dumps({"model": "model", "version": "1", "events": events}).encode()


def test_logger_batch_reaches_the_real_ingest_app_over_a_unix_socket(
    sidecar_socket: Path,
) -> None:
    """A logger-shaped batch gets the real app's 202 and JSON count over the Unix socket."""
    transport = transport_for(f"unix://{sidecar_socket}", TOKEN)
    try:
        sockets = []
        for _ in range(3):
            status, body = transport.send(_batch(500), TIMEOUT)
            assert status == 202
            assert json.loads(body)["accepted"] == 500
            sockets.append(transport._sock)  # type: ignore[union-attr]
        # the same kept-alive connection served every batch (held, so no identity is reused)
        assert all(sock is sockets[0] is not None for sock in sockets)
    finally:
        transport.close()


def test_real_ingest_app_answers_too_large_and_unauthorized(
    sidecar_socket: Path, connect: Connect
) -> None:
    """Over the Unix socket a too-large body gets 413 (not a broken pipe) and a bad token 401."""
    transport = connect(f"unix://{sidecar_socket}", TOKEN)
    status, body = transport.send(_batch(6000), TIMEOUT)
    assert status == 413
    assert json.loads(body)["error"]["reason"] == "too_large"
    assert transport.send(_batch(10), TIMEOUT).status == 202
    intruder = connect(f"unix://{sidecar_socket}", TOKEN + "x")
    assert intruder.send(_batch(10), TIMEOUT).status == 401
