"""The ``serve`` process: ingest and metrics listeners over one set of monitors, in one event loop.

``run_serve`` is the only place that reads ``os.environ``: it builds ``Settings``, configures
logging, loads every profile (failing fast, exit 2, on the first bad one) and runs ``serve``
until SIGTERM or SIGINT. ``Sidecar`` is the same stack as an object with ``start``/``stop``,
so the demo, the benchmarks and the tests can run the real thing in-process.

The two listeners are separate on purpose: ingest (pod-local by default) is where the model
server writes, metrics (``GET /metrics`` only) is what Prometheus scrapes. Both run in one
asyncio loop, so the collector reads the monitors between requests, never during one. With
``ingest_socket`` set, the ingest server also accepts on that Unix socket: one app, one lifespan,
two sockets, so both ways in share the token, the limits and the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from structlog.typing import FilteringBoundLogger

from sidecar._listen import (
    QuietServer,
    SocketFileId,
    bind,
    bind_unix,
    remove_socket_file,
    run_loop,
    socket_file_id,
    stop_on_signals,
    uvicorn_config,
)
from sidecar._shipping import ShippingPipeline
from sidecar.counters import IngestCounters
from sidecar.engine import EngineConfig
from sidecar.errors import ConfigError, ProfileError
from sidecar.events import IngestLimits
from sidecar.feedback import FeedbackStore
from sidecar.ingest import create_ingest_app
from sidecar.logs import configure_logging, get_logger
from sidecar.metrics import ModelwatchCollector, build_registry, package_version
from sidecar.monitors import MonitorRegistry
from sidecar.profile import Profile, load_profile
from sidecar.settings import Settings, env_key, flag
from sidecar.window import slot_count

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
METRICS_PATH = "/metrics"
SHUTDOWN_GRACE_SECONDS = 10
"""How long in-flight requests may run after SIGTERM (Kubernetes waits 30 s by default)."""
SHIPPER_STOP_SECONDS = 10
"""How long the shipper may drain and finish its bulk request after the listeners stopped."""

_OVERRIDABLE = (
    "ingest_addr",
    "ingest_socket",
    "metrics_addr",
    "window_seconds",
    "slot_seconds",
    "max_body_bytes",
    "max_events",
    "body_timeout_seconds",
    "alpha",
    "correction",
    "min_window_values",
    "latency_buckets",
    "feedback_capacity",
    "log_level",
    "log_format",
)
"""Settings with a CLI flag; the ingest token has none, so it never shows up in ``ps``."""

_HELP = {
    "ingest_addr": "HOST:PORT of the ingest API (default 127.0.0.1:8081; port 0 = any free port)",
    "ingest_socket": "absolute path of a Unix socket also serving the ingest API (default: none)",
    "metrics_addr": "HOST:PORT of GET /metrics (default 0.0.0.0:9500)",
    "window_seconds": "drift window length in seconds (default 3600)",
    "slot_seconds": "drift window slot length in seconds (default 60)",
    "max_body_bytes": "largest ingest request body in bytes (default 8388608)",
    "max_events": "most events in one ingest request (default 10000)",
    "body_timeout_seconds": "seconds a client has to send a whole request body (default 30)",
    "alpha": "significance level of the drift tests (default 0.05)",
    "correction": "multiple-testing correction: benjamini-hochberg (default) or bonferroni",
    "min_window_values": "window values needed before statistics are reported (default 100)",
    "latency_buckets": "comma-separated latency histogram bounds in seconds",
    "feedback_capacity": "predictions remembered for joining feedback labels (default 100000)",
    "log_level": "debug, info (default), warning, error or critical",
    "log_format": "json (default) or console",
}


# --------------------------------------------------------------------------- CLI


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` flags; each overrides the ``MODELWATCH_*`` key of the same name."""
    parser.add_argument(
        "--profile",
        dest="profiles",
        action="append",
        metavar="PATH",
        help=f"reference profile JSON; repeat for several models (env {env_key('profiles')})",
    )
    for name in _OVERRIDABLE:
        parser.add_argument(
            flag(name),
            dest=name,
            metavar=name.split("_")[-1].upper(),
            help=f"{_HELP[name]} (env {env_key(name)})",
        )


def run_serve(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM/SIGINT.

    Returns 0 after a clean stop, 2 for bad settings, profiles or listen addresses, and 1 when
    a listener fails on its own.
    """
    overrides = {name: getattr(args, name, None) for name in ("profiles", *_OVERRIDABLE)}
    try:
        settings = Settings.from_sources(os.environ, overrides)
    except ConfigError as exc:
        configure_logging()
        get_logger().error(str(exc), problems=exc.problems)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    logger = get_logger()
    logger.info("starting", version=package_version(), config=settings.redacted())
    try:
        profiles = load_profiles(settings.profiles)
    except ProfileError as exc:
        logger.error(str(exc), file=exc.source, field=exc.field, reason=exc.reason)
        return EXIT_USAGE
    for path, profile in zip(settings.profiles, profiles, strict=True):
        logger.info(
            "profile loaded",
            model=profile.model,
            version=profile.version,
            features=len(profile.features),
            prediction=profile.prediction is not None,
            path=str(path),
        )
    try:
        run_loop(_serve_until_signalled(settings, profiles, logger))
    except ConfigError as exc:
        logger.error(str(exc), problems=exc.problems)
        return EXIT_USAGE
    except RuntimeError as exc:
        logger.error(str(exc))
        return EXIT_FAILURE
    logger.info("stopped")
    return EXIT_OK


def load_profiles(paths: Sequence[Path]) -> list[Profile]:
    """Load and validate every profile; ProfileError names the file and field of a bad one.

    Two files for the same model version are refused too: which one would win is not obvious.
    """
    profiles: list[Profile] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        profile = load_profile(path)
        key = (profile.model, profile.version)
        if key in seen:
            raise ProfileError(
                "version",
                f"model {profile.model!r} version {profile.version!r} is already loaded "
                f"from {seen[key]}",
                source=str(path),
            )
        seen[key] = path
        profiles.append(profile)
    return profiles


# --------------------------------------------------------------------------- the stack


class Sidecar:
    """The whole sidecar in-process: monitors, ingest app, collector, and both listeners.

    Build it, ``await start()`` (the bound ports are then in ``ingest_port`` and
    ``metrics_port``, the Unix socket, if any, in ``ingest_socket``), and ``await stop()``;
    or use it as an async context manager. ``stop`` removes the Unix socket file.
    """

    def __init__(
        self,
        settings: Settings,
        profiles: Sequence[Profile],
        *,
        logger: FilteringBoundLogger,
        clock: Callable[[], float] = time.monotonic,
        extra_collectors: Sequence[Collector] = (),
    ) -> None:
        self.settings = settings
        self.logger = logger
        self.monitors = _build_monitors(settings, profiles, clock)
        self.counters = IngestCounters()
        self.feedback = FeedbackStore(capacity=settings.feedback_capacity)
        self.shipping = (
            ShippingPipeline(settings, self.monitors, logger=logger) if settings.shipping else None
        )
        extra = [*extra_collectors]
        if self.shipping is not None:
            extra.append(self.shipping.collector)
        self.collector = ModelwatchCollector(
            self.monitors, self.counters, self.feedback, extra=extra
        )
        self.registry = build_registry(self.collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.ingest_app = create_ingest_app(
            monitors=self.monitors,
            counters=self.counters,
            feedback=self.feedback,
            limits=IngestLimits(
                max_body_bytes=settings.max_body_bytes, max_events=settings.max_events
            ),
            token=settings.ingest_token,
            logger=logger.bind(component="ingest"),
            clock=clock,
            body_timeout_seconds=settings.body_timeout_seconds,
            on_accepted=None if self.shipping is None else self.shipping.on_accepted,
        )
        self.metrics_app = MetricsApp(self.registry)
        self.ingest_port: int | None = None
        self.ingest_socket: Path | None = None
        self.metrics_port: int | None = None
        self._socket_file: tuple[Path, SocketFileId | None] | None = None
        self._servers: list[QuietServer] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Bind both listeners (and the ingest Unix socket) and return once they accept."""
        if self.shipping is not None:
            self.shipping.start()
        ingest_socks: list[socket.socket] = []
        try:
            ingest_socks.append(bind(self.settings.ingest_addr, env_key("ingest_addr")))
            path = self.settings.ingest_socket
            if path is not None:
                ingest_socks.append(bind_unix(path, env_key("ingest_socket")))
                self._socket_file = (path, socket_file_id(path))
            metrics_sock = bind(self.settings.metrics_addr, env_key("metrics_addr"))
        except ConfigError:
            for sock in ingest_socks:
                sock.close()
            self._remove_socket_file()
            await self._close_shipping()
            raise
        self.ingest_port = ingest_socks[0].getsockname()[1]
        self.ingest_socket = self.settings.ingest_socket
        self.metrics_port = metrics_sock.getsockname()[1]
        for app, socks, lifespan in (
            (self.ingest_app, ingest_socks, "on"),
            (self.metrics_app, [metrics_sock], "off"),
        ):
            config = uvicorn_config(
                app,
                self.settings.log_level,
                lifespan=lifespan,
                grace_seconds=SHUTDOWN_GRACE_SECONDS,
            )
            server = QuietServer(config)
            self._servers.append(server)
            self._tasks.append(asyncio.create_task(server.serve(sockets=socks)))
        await self._wait_started()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), and close both listeners."""
        for server in self._servers:
            server.should_exit = True
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()
        self._tasks.clear()
        for result in results:
            if isinstance(result, BaseException):
                self.logger.error("listener failed while stopping", exc_info=result)
        self._remove_socket_file()
        await self._close_shipping()

    def _remove_socket_file(self) -> None:
        """Unlink the ingest socket file we bound, unless another process has replaced it."""
        bound, self._socket_file = self._socket_file, None
        if bound is not None:
            remove_socket_file(*bound)

    async def _close_shipping(self) -> None:
        """Stop shipping after the listeners, so every accepted request is in the spool."""
        shipping, self.shipping = self.shipping, None
        if shipping is not None:
            await shipping.close(SHIPPER_STOP_SECONDS)

    async def wait_stopped(self, stop: asyncio.Event) -> bool:
        """Wait for ``stop`` (True) or for a listener to end on its own (False, and logged)."""
        stop_task = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                [stop_task, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop_task.cancel()
        if stop_task in done:
            return True
        self.logger.error("a listener stopped unexpectedly; shutting down")
        return False

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _wait_started(self) -> None:
        # uvicorn has no started event; its flag flips after startup, so poll it while
        # watching for a listener that died during startup.
        while not all(server.started for server in self._servers):
            for task in self._tasks:
                if task.done():
                    await self.stop()
                    raise RuntimeError("a listener failed to start (see the log above)")
            await asyncio.sleep(0.005)


async def serve(
    settings: Settings,
    profiles: Sequence[Profile],
    *,
    logger: FilteringBoundLogger,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the sidecar until ``stop`` is set; set ``ready`` once both listeners accept.

    Raises RuntimeError when a listener fails to start or stops without being asked to.
    """
    sidecar = Sidecar(settings, profiles, logger=logger)
    await sidecar.start()
    unix = {} if sidecar.ingest_socket is None else {"ingest_socket": str(sidecar.ingest_socket)}
    logger.info(
        "listening",
        ingest_host=settings.ingest_addr.host,
        ingest_port=sidecar.ingest_port,
        **unix,
        metrics_host=settings.metrics_addr.host,
        metrics_port=sidecar.metrics_port,
    )
    if ready is not None:
        ready.set()
    try:
        requested = await sidecar.wait_stopped(stop)
    finally:
        await sidecar.stop()
    if not requested:
        raise RuntimeError("a listener stopped unexpectedly")


def _build_monitors(
    settings: Settings, profiles: Sequence[Profile], clock: Callable[[], float]
) -> MonitorRegistry:
    """The monitors of ``profiles``; ConfigError naming the window settings when memory runs out.

    The slot cap bounds the windows, but many wide profiles can still need more memory than the
    pod has; that is a sizing problem the operator fixes in the settings, not a crash.
    """
    try:
        return MonitorRegistry.from_profiles(profiles, engine_config(settings), clock)
    except MemoryError as exc:
        slots = slot_count(settings.window_seconds, settings.slot_seconds)
        raise ConfigError(
            {
                f"{env_key('window_seconds')}/{env_key('slot_seconds')}": (
                    f"not enough memory for the drift windows of {len(profiles)} model "
                    f"version(s) at {slots} slots each ({exc}); use fewer slots (a longer "
                    "slot or a shorter window), fewer bins in the profiles, or more memory"
                )
            }
        ) from exc


def engine_config(settings: Settings) -> EngineConfig:
    """The drift engine's configuration from the settings."""
    return EngineConfig(
        window_seconds=settings.window_seconds,
        slot_seconds=settings.slot_seconds,
        alpha=settings.alpha,
        correction=settings.correction,
        min_window_values=settings.min_window_values,
        latency_buckets=settings.latency_buckets,
    )


# --------------------------------------------------------------------------- metrics app


class MetricsApp:
    """An ASGI app that serves ``GET /metrics`` from ``registry`` and 404 for everything else."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request."""
        if scope["type"] != "http":
            return
        response = self._respond(scope)
        await response(scope, receive, send)

    def _respond(self, scope: Scope) -> Response:
        if scope["path"] != METRICS_PATH:
            return PlainTextResponse("not found; this listener serves GET /metrics only\n", 404)
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("method not allowed\n", 405, headers={"Allow": "GET, HEAD"})
        accept = _header(scope, b"accept")
        encoder, content_type = choose_encoder(accept)
        return Response(encoder(self._registry), headers={"Content-Type": content_type})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


# --------------------------------------------------------------------------- plumbing


async def _serve_until_signalled(
    settings: Settings, profiles: Sequence[Profile], logger: FilteringBoundLogger
) -> None:
    stop = asyncio.Event()
    stop_on_signals(logger, stop.set)
    await serve(settings, profiles, logger=logger, stop=stop)
