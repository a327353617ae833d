"""Plumbing shared by the processes that serve HTTP with uvicorn (the sidecar and the model server).

Binding happens before uvicorn starts so that an address already in use is a settings error
(exit 2, the setting named), not a listener that dies after start-up. Signals are left to the
owning process, which stops its listeners itself and so exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from structlog.typing import FilteringBoundLogger

from sidecar.errors import ConfigError
from sidecar.settings import Address

_T = TypeVar("_T")


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: its owner decides when it should exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing; ``stop_on_signals`` handles SIGTERM and SIGINT for the process."""
        yield


def uvicorn_config(
    app: object,
    log_level: str,
    *,
    lifespan: str,
    grace_seconds: int,
) -> uvicorn.Config:
    """Uvicorn settings for one listener: our logging, no access log, no server header.

    ``lifespan`` is uvicorn's ``"on"``, ``"off"`` or ``"auto"``.
    """
    level = logging.getLevelNamesMapping()[log_level.upper()]
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        # uvicorn's info lines ("Started server process", twice) say less than our own
        # start-up lines; keep its warnings and errors unless debugging.
        log_level=level if level == logging.DEBUG else max(level, logging.WARNING),
        access_log=False,
        server_header=False,
        lifespan=lifespan,  # type: ignore[arg-type]
        ws="none",
        timeout_graceful_shutdown=grace_seconds,
    )


def bind(address: Address, key: str) -> socket.socket:
    """A bound TCP socket for ``address``; ConfigError naming the setting ``key`` on failure."""
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError({key: f"cannot listen on {address}: {reason}"}) from exc
    return sock


def stop_on_signals(logger: FilteringBoundLogger, stop: Callable[[], object]) -> None:
    """Log and call ``stop`` on SIGTERM or SIGINT; must run inside the event loop it serves."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        logger.info("shutting down", signal=signal.Signals(signum).name)
        stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` on uvloop when it is installed, else on the standard asyncio loop."""
    try:
        import uvloop
    except ModuleNotFoundError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
