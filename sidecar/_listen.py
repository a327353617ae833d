"""Plumbing shared by the processes that serve HTTP with uvicorn (the sidecar and the model server).

Binding happens before uvicorn starts so that an address already in use is a settings error
(exit 2, the setting named), not a listener that dies after start-up. The same holds for a Unix
socket file: a stale one left by a dead process is replaced, anything else in the way is refused.
Signals are left to the owning process, which stops its listeners itself and so exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from structlog.typing import FilteringBoundLogger

from sidecar.errors import ConfigError
from sidecar.settings import Address

_T = TypeVar("_T")

UNIX_SOCKET_MODE = 0o660
"""Owner and group may connect: the model server shares the sidecar's group, others may not."""
_PROBE_SECONDS = 2.0
"""How long a connect to an existing socket file may take (telling live from stale)."""


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


def bind_unix(path: Path, key: str) -> socket.socket:
    """A bound Unix stream socket at ``path`` with mode 0o660; ConfigError naming ``key`` if not.

    The directory must exist. A socket file nobody listens on (left by a dead process) is
    replaced; a live listener, or a file that is not a socket, is refused rather than removed.
    """
    if not path.parent.is_dir():
        raise ConfigError({key: f"directory {path.parent} does not exist"})
    _clear_stale_socket(path, key)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, UNIX_SOCKET_MODE)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ConfigError({key: f"cannot listen on {path}: {reason}"}) from exc
    return sock


SocketFileId = tuple[int, int, int]
"""Device, inode and change time of a socket file: inodes alone are reused at once."""


def socket_file_id(path: Path) -> SocketFileId | None:
    """Who the socket file at ``path`` is; None when it is gone or not a socket."""
    try:
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return None
    return (info.st_dev, info.st_ino, info.st_ctime_ns)


def remove_socket_file(path: Path, file_id: SocketFileId | None) -> None:
    """Unlink ``path`` if it is still the socket file ``file_id`` (not one a successor bound)."""
    if file_id is not None and socket_file_id(path) == file_id:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clear_stale_socket(path: Path, key: str) -> None:
    """Remove a socket file at ``path`` nobody listens on; ConfigError for anything else there."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError({key: f"cannot inspect {path}: {exc.strerror or exc}"}) from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError({key: f"{path} exists and is not a socket"})
    live = ConfigError({key: f"another process is listening on {path}"})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # Non-blocking with a bound: a listener whose backlog is full answers EAGAIN at once.
        probe.settimeout(_PROBE_SECONDS)
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            pass  # stale: the process that bound it is gone
        except FileNotFoundError:
            return  # removed meanwhile
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                raise live from exc
            reason = exc.strerror or str(exc)
            raise ConfigError({key: f"cannot check the socket {path}: {reason}"}) from exc
        else:
            raise live
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


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
