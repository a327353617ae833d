"""The ``python -m serving`` process: settings, logging, the app, one uvicorn listener, signals.

``run`` is the only place that reads the environment. It fails fast, exit 2, on bad settings,
a missing or malformed ``metadata.json`` or an address it cannot listen on; it then listens
(``/healthz`` answers at once, ``/readyz`` once the model is loaded) while the ONNX session loads
on a thread. A model that fails to load stops the process with exit 1 and the reason in the log:
never a server that is alive but cannot predict. SIGTERM or SIGINT stop accepting connections,
let in-flight requests and queued batches finish, flush the prediction log within its deadline,
and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from serving.app import create_app
from serving.errors import ModelLoadError
from serving.metadata import ModelLocation, ModelMetadata, load_metadata, locate
from serving.model import OnnxModel, example_inputs
from serving.prediction_log import sidecar_prediction_log
from serving.settings import ServingSettings, env_key
from sidecar.errors import ConfigError
from sidecar.logs import configure_logging, get_logger
from sidecar.metrics import package_version

SERVICE_NAME = "modelwatch-serving"
EVENT_DATASET = "modelwatch.serving"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
SHUTDOWN_GRACE_SECONDS = 20
"""How long in-flight requests may run after SIGTERM (Kubernetes waits 30 s by default)."""


def main() -> int:
    """Entry point of ``python -m serving``."""
    return run(os.environ)


def run(environ: Mapping[str, str]) -> int:
    """Serve until SIGTERM/SIGINT: 0 on a clean stop, 1 if the model cannot load, 2 on bad input."""
    try:
        settings = ServingSettings.from_environ(environ)
    except ConfigError as exc:
        _configure()
        get_logger().error(str(exc), problems=exc.problems)
        return EXIT_USAGE
    _configure(settings.log_level, settings.log_format)
    logger = get_logger()
    logger.info("starting", version=package_version(), config=settings.redacted())
    try:
        location = locate(settings.model_uri)
        metadata = load_metadata(location.metadata_path)
    except ModelLoadError as exc:
        logger.error(str(exc), field=exc.field, reason=exc.reason, file=exc.source)
        return EXIT_USAGE
    logger = logger.bind(**{"ml.model.name": metadata.name, "ml.model.version": metadata.version})
    try:
        sock = _bind(settings)
    except ConfigError as exc:
        logger.error(str(exc), problems=exc.problems)
        return EXIT_USAGE
    outcome = _run(_serve(settings, metadata, location, sock, logger))
    if outcome != EXIT_OK:
        return outcome
    logger.info("stopped")
    return EXIT_OK


async def _serve(
    settings: ServingSettings,
    metadata: ModelMetadata,
    location: ModelLocation,
    sock: socket.socket,
    logger: FilteringBoundLogger,
) -> int:
    registry = CollectorRegistry(auto_describe=True)
    outcome = EXIT_OK
    server: _Server | None = None

    def load_failed(_: BaseException) -> None:
        nonlocal outcome
        outcome = EXIT_FAILURE
        if server is not None:
            server.should_exit = True

    def load() -> OnnxModel:
        return _load_model(settings, metadata, location, logger)

    app = create_app(
        settings,
        metadata,
        load_model=load,
        prediction_log=sidecar_prediction_log(
            settings, model=metadata.name, version=metadata.version, registry=registry
        ),
        registry=registry,
        logger=logger,
        on_load_failed=load_failed,
    )
    server = _Server(_uvicorn_config(app, settings))
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        logger.info("shutting down", signal=signal.Signals(signum).name)
        if server is not None:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    host, port = sock.getsockname()[:2]
    serve_task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serve_task.done():
        await asyncio.sleep(0.005)
    if server.started:
        logger.info("listening", host=host, port=port, serving_port=port)
    await serve_task
    if outcome == EXIT_OK and not server.started:
        logger.error("the listener failed to start (see the log above)")
        return EXIT_FAILURE
    return outcome


def _load_model(
    settings: ServingSettings,
    metadata: ModelMetadata,
    location: ModelLocation,
    logger: FilteringBoundLogger,
) -> OnnxModel:
    model = OnnxModel.load(location.model_path, metadata, threads=settings.onnx_threads)
    try:
        model.predict(example_inputs(metadata))
    except Exception as exc:  # a warm-up on zeros may legitimately fail for some models
        logger.warning("warm-up prediction failed; serving anyway", error=str(exc))
    return model


def _configure(level: str = "info", fmt: str = "json") -> None:
    configure_logging(level, fmt, service_name=SERVICE_NAME, dataset=EVENT_DATASET)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to us, so a SIGTERM ends in a clean exit 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_config(app: object, settings: ServingSettings) -> uvicorn.Config:
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        log_level=level if level == logging.DEBUG else max(level, logging.WARNING),
        access_log=False,
        server_header=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


def _bind(settings: ServingSettings) -> socket.socket:
    address = settings.serving_addr
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
        raise ConfigError(
            {env_key("serving_addr"): f"cannot listen on {address}: {reason}"}
        ) from exc
    return sock


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when installed, else on the standard asyncio loop."""
    try:
        import uvloop
    except ModuleNotFoundError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
